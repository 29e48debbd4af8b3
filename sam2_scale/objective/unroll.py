"""The training forward of SAM 2.1: unroll a batch of clips through the model with simulated
prompts and iterative correction clicks, keeping every step's outputs for the loss.

Nothing is detached between frames or correction steps: the loss back-propagates through the
memory bank over the whole clip and through every correction step.
"""

import torch
from torch.utils.checkpoint import checkpoint

from .prompts import PromptConfig, concat_points, sample_box_prompt, sample_click_from_error, sample_scenario


def unroll_clip(model, batch, gen, cfg=None, checkpoint_correction_steps=False):
    """Run `model` (a SAM2Base) over `batch` (a `sam2_scale.data.Batch`).

    gen: the prompt generator, seeded identically on every rank.
    Returns (frame_outputs, scenario); frame_outputs is a list in time order of dicts with
    `multistep_pred_multimasks_high_res` / `multistep_pred_ious` /
    `multistep_object_score_logits` / `multistep_point_inputs` (one entry per prediction step:
    the initial one, then each correction) and the final `pred_masks`, `pred_masks_high_res`.
    """
    cfg = cfg or PromptConfig()
    num_frames = batch.num_frames
    # The backbone runs once on every frame of every clip.
    backbone_out = model.forward_image(batch.flat_frames)
    _, vision_feats, vision_pos_embeds, feat_sizes = model._prepare_backbone_features(backbone_out)
    scenario = sample_scenario(num_frames, cfg, gen)

    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    for t in scenario.processing_order:
        img_ids = batch.flat_obj_to_img_idx[t]
        feats = [x[:, img_ids] for x in vision_feats]
        pos = [x[:, img_ids] for x in vision_pos_embeds]
        gt = batch.masks[t].unsqueeze(1)  # (O, 1, H, W)

        point_inputs, mask_inputs = None, None
        kind = scenario.prompt_kind.get(t)
        if kind == "mask":
            mask_inputs = gt
        elif kind == "box":
            coords, labels = sample_box_prompt(gt, gen, cfg.box_noise, cfg.box_noise_bound)
            point_inputs = {"point_coords": coords, "point_labels": labels}
        elif kind == "click":
            coords, labels = sample_click_from_error(gt, None, gen)
            point_inputs = {"point_coords": coords, "point_labels": labels}

        out = _track_frame(
            model,
            t,
            t in scenario.init_cond_frames,
            feats,
            pos,
            feat_sizes,
            point_inputs,
            mask_inputs,
            output_dict,
            num_frames,
            gt,
            cfg,
            gen,
            corrections=cfg.num_correction_pt_per_frame if t in scenario.frames_to_correct else 0,
            checkpoint_correction_steps=checkpoint_correction_steps,
        )
        # Frames that received corrections become conditioning frames (slot-0 memories).
        as_cond = t in scenario.init_cond_frames or (cfg.add_all_frames_to_correct_as_cond and t in scenario.frames_to_correct)
        output_dict["cond_frame_outputs" if as_cond else "non_cond_frame_outputs"][t] = out

    by_frame = {**output_dict["cond_frame_outputs"], **output_dict["non_cond_frame_outputs"]}
    # The pointer feeds later frames only; it is dropped so that every output the loss sees
    # is used (the last frame's pointer never is).
    frame_outputs = [{k: v for k, v in by_frame[t].items() if k != "obj_ptr"} for t in range(num_frames)]
    return frame_outputs, scenario


def _track_frame(
    model,
    t,
    is_init_cond_frame,
    feats,
    pos,
    feat_sizes,
    point_inputs,
    mask_inputs,
    output_dict,
    num_frames,
    gt,
    cfg,
    gen,
    corrections,
    checkpoint_correction_steps,
):
    current_out, sam_outputs, high_res_features, pix_feat_with_mem = model._track_step(
        t, is_init_cond_frame, feats, pos, feat_sizes, point_inputs, mask_inputs, output_dict, num_frames, False, None
    )
    low_res_multimasks, high_res_multimasks, ious, low_res_masks, high_res_masks, obj_ptr, object_score_logits = sam_outputs
    steps = {
        "multistep_pred_multimasks_high_res": [high_res_multimasks],
        "multistep_pred_ious": [ious],
        "multistep_object_score_logits": [object_score_logits],
        "multistep_point_inputs": [point_inputs],
    }
    for _ in range(corrections):
        # With a small probability, click as if nothing had been predicted (inside the GT).
        from_gt = (
            model.training
            and cfg.prob_to_sample_from_gt > 0
            and torch.rand((), generator=gen, device=gen.device).item() < cfg.prob_to_sample_from_gt
        )
        new_points, new_labels = sample_click_from_error(gt, None if from_gt else high_res_masks > 0, gen)
        point_inputs = concat_points(point_inputs, new_points, new_labels)
        # The heads re-run on the same memory-conditioned features; the previous low-res logits
        # are the mask prompt (not detached).
        multimask = model._use_multimask(is_init_cond_frame, point_inputs)
        heads_args = (pix_feat_with_mem, point_inputs, low_res_masks, high_res_features, multimask)
        if checkpoint_correction_steps and not multimask and torch.is_grad_enabled():
            sam_outputs = checkpoint(model._forward_sam_heads, *heads_args, use_reentrant=False)
        else:
            sam_outputs = model._forward_sam_heads(*heads_args)
        low_res_multimasks, high_res_multimasks, ious, low_res_masks, high_res_masks, obj_ptr, object_score_logits = sam_outputs
        steps["multistep_pred_multimasks_high_res"].append(high_res_multimasks)
        steps["multistep_pred_ious"].append(ious)
        steps["multistep_object_score_logits"].append(object_score_logits)
        steps["multistep_point_inputs"].append(point_inputs)

    current_out.update(steps)
    current_out["pred_masks"] = low_res_masks
    current_out["pred_masks_high_res"] = high_res_masks
    current_out["obj_ptr"] = obj_ptr
    # The memory is written from the final prediction of the frame.
    model._encode_memory_in_output(feats, feat_sizes, point_inputs, True, high_res_masks, object_score_logits, current_out)
    return current_out
