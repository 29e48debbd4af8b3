"""The training forward of SAM 2.1: unroll a batch of clips through the model with simulated
prompts and iterative correction clicks, keeping every step's outputs for the loss.

Nothing is detached between frames or correction steps: the loss back-propagates through the
memory bank over the whole clip and through every correction step. Nothing is read back from
the device either: every decision is the scenario's, made on the host beforehand.
"""

import torch

from ..config.schema import PromptConfig
from ..data.transforms import normalize_frames
from .prompts import concat_points, sample_box_prompt, sample_click_from_error


def unroll_clip(model, batch, scenario, noise, cfg=None):
    """Run `model` (a SAM2Base) over `batch` (a `sam2_scale.data.batch.Batch`) of one or more clips.

    scenario: a `ClipScenario` (see `sample_scenario`), shared by every clip of the batch;
    noise: a `PixelNoise` over the batch's objects, for clicks and box jitter.
    Returns frame_outputs, a list in time order of dicts with
    `multistep_pred_multimasks_high_res` / `multistep_pred_ious` /
    `multistep_object_score_logits` / `multistep_point_inputs` (one entry per prediction step:
    the initial one, then each correction) and the final `pred_masks`, `pred_masks_high_res`.
    """
    cfg = cfg or PromptConfig()
    num_frames = batch.num_frames
    if scenario.num_frames != num_frames:
        raise ValueError(f"a scenario of {scenario.num_frames} frames for clips of {num_frames}")
    images = batch.flat_frames
    if images.dtype == torch.uint8:
        images = normalize_frames(images)
    # The backbone runs once on every frame of every clip.
    backbone_out = model.forward_image(images)
    _, vision_feats, vision_pos_embeds, feat_sizes = model._prepare_backbone_features(backbone_out)

    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    for t in scenario.processing_order:
        feats = [per_object(x, t, num_frames, batch.objects_per_clip) for x in vision_feats]
        # Every image has the same position encoding: one row serves all objects.
        pos = [x[:, t : t + 1].expand(-1, batch.num_objects, -1) for x in vision_pos_embeds]
        gt = batch.masks[t].unsqueeze(1)  # (O, 1, H, W)
        is_init_cond_frame = t in scenario.init_cond_frames

        point_inputs, mask_inputs = _initial_prompt(scenario.prompt_kind.get(t), gt, cfg, noise)
        current_out, sam_outputs, high_res_features, pix_feat_with_mem = model._track_step(
            t,
            is_init_cond_frame=is_init_cond_frame,
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=feat_sizes,
            point_inputs=point_inputs,
            mask_inputs=mask_inputs,
            output_dict=output_dict,
            num_frames=num_frames,
            track_in_reverse=False,
            prev_sam_mask_logits=None,
        )
        steps = [(point_inputs, sam_outputs)]
        for from_gt in scenario.click_from_gt.get(t, []):
            steps.append(
                _correction_step(model, is_init_cond_frame, steps[-1], gt, pix_feat_with_mem, high_res_features, from_gt, noise)
            )
        current_out.update(
            multistep_pred_multimasks_high_res=[out.high_res_multimasks for _, out in steps],
            multistep_pred_ious=[out.ious for _, out in steps],
            multistep_object_score_logits=[out.object_score_logits for _, out in steps],
            multistep_point_inputs=[points for points, _ in steps],
        )
        # The final step is the frame's prediction, and what its memory is written from.
        final_points, final = steps[-1]
        current_out.update(pred_masks=final.low_res_masks, pred_masks_high_res=final.high_res_masks, obj_ptr=final.obj_ptr)
        model._encode_memory_in_output(
            feats, feat_sizes, final_points, True, final.high_res_masks, final.object_score_logits, current_out
        )

        # Frames that received corrections become conditioning frames (slot-0 memories).
        as_cond = is_init_cond_frame or (cfg.add_all_frames_to_correct_as_cond and t in scenario.frames_to_correct)
        output_dict["cond_frame_outputs" if as_cond else "non_cond_frame_outputs"][t] = current_out

    by_frame = {**output_dict["cond_frame_outputs"], **output_dict["non_cond_frame_outputs"]}
    # The pointer feeds later frames only; it is dropped so that every output the loss sees
    # is used (the last frame's pointer never is).
    return [{k: v for k, v in by_frame[t].items() if k != "obj_ptr"} for t in range(num_frames)]


def per_object(x, t, num_frames, objects_per_clip):
    """Frame t's features (HW, O, C) for every object, from sequence-first backbone features
    (HW, B*T, C) whose rows are clip-major. Always a dense copy: compiled regions then see the
    same memory layout for one clip as for several."""
    rows = [x[:, b * num_frames + t : b * num_frames + t + 1].expand(-1, n, -1) for b, n in enumerate(objects_per_clip) if n]
    return torch.cat(rows, dim=1)


def _initial_prompt(kind, gt, cfg, noise):
    """(point_inputs, mask_inputs) of an initial conditioning frame; (None, None) otherwise."""
    if kind == "mask":
        return None, gt
    if kind == "box":
        coords, labels = sample_box_prompt(gt, noise, cfg.box_noise, cfg.box_noise_bound)
    elif kind == "click":
        coords, labels = sample_click_from_error(gt, None, noise)
    else:
        return None, None
    return {"point_coords": coords, "point_labels": labels}, None


def _correction_step(model, is_init_cond_frame, previous, gt, pix_feat_with_mem, high_res_features, from_gt, noise):
    """One correction click on top of `previous` (point_inputs, sam_outputs): returns the next.

    from_gt: click as if nothing had been predicted (uniformly inside the GT), a training-only
    draw of the scenario."""
    point_inputs, sam_outputs = previous
    pred = None if (from_gt and model.training) else sam_outputs.high_res_masks > 0
    new_points, new_labels = sample_click_from_error(gt, pred, noise)
    point_inputs = concat_points(point_inputs, new_points, new_labels)
    # The heads re-run on the same memory-conditioned features; the previous low-res logits
    # are the mask prompt (not detached).
    multimask = model._use_multimask(is_init_cond_frame, point_inputs)
    outputs = model._forward_sam_heads(
        pix_feat_with_mem,
        point_inputs=point_inputs,
        mask_inputs=sam_outputs.low_res_masks,
        high_res_features=high_res_features,
        multimask_output=multimask,
    )
    return point_inputs, outputs
