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
        is_init_cond_frame = t in scenario.init_cond_frames

        point_inputs, mask_inputs = _initial_prompt(scenario.prompt_kind.get(t), gt, cfg, gen)
        current_out, sam_outputs, high_res_features, pix_feat_with_mem = model._track_step(
            t, is_init_cond_frame, feats, pos, feat_sizes, point_inputs, mask_inputs, output_dict, num_frames, False, None
        )
        steps = [(point_inputs, sam_outputs)]
        if t in scenario.frames_to_correct:
            for _ in range(cfg.num_correction_pt_per_frame):
                steps.append(
                    _correction_step(
                        model,
                        is_init_cond_frame,
                        steps[-1],
                        gt,
                        pix_feat_with_mem,
                        high_res_features,
                        cfg,
                        gen,
                        checkpoint_correction_steps,
                    )
                )
        current_out.update(
            multistep_pred_multimasks_high_res=[out[1] for _, out in steps],
            multistep_pred_ious=[out[2] for _, out in steps],
            multistep_object_score_logits=[out[6] for _, out in steps],
            multistep_point_inputs=[points for points, _ in steps],
        )
        # The final step is the frame's prediction, and what its memory is written from.
        final_points, (_, _, _, low_res_masks, high_res_masks, obj_ptr, object_score_logits) = steps[-1]
        current_out.update(pred_masks=low_res_masks, pred_masks_high_res=high_res_masks, obj_ptr=obj_ptr)
        model._encode_memory_in_output(feats, feat_sizes, final_points, True, high_res_masks, object_score_logits, current_out)

        # Frames that received corrections become conditioning frames (slot-0 memories).
        as_cond = is_init_cond_frame or (cfg.add_all_frames_to_correct_as_cond and t in scenario.frames_to_correct)
        output_dict["cond_frame_outputs" if as_cond else "non_cond_frame_outputs"][t] = current_out

    by_frame = {**output_dict["cond_frame_outputs"], **output_dict["non_cond_frame_outputs"]}
    # The pointer feeds later frames only; it is dropped so that every output the loss sees
    # is used (the last frame's pointer never is).
    frame_outputs = [{k: v for k, v in by_frame[t].items() if k != "obj_ptr"} for t in range(num_frames)]
    return frame_outputs, scenario


def _initial_prompt(kind, gt, cfg, gen):
    """(point_inputs, mask_inputs) of an initial conditioning frame; (None, None) otherwise."""
    if kind == "mask":
        return None, gt
    if kind == "box":
        coords, labels = sample_box_prompt(gt, gen, cfg.box_noise, cfg.box_noise_bound)
    elif kind == "click":
        coords, labels = sample_click_from_error(gt, None, gen)
    else:
        return None, None
    return {"point_coords": coords, "point_labels": labels}, None


def _correction_step(model, is_init_cond_frame, previous, gt, pix_feat_with_mem, high_res_features, cfg, gen, use_checkpoint):
    """One correction click on top of `previous` (point_inputs, sam_outputs): returns the next."""
    point_inputs, (_, _, _, low_res_masks, high_res_masks, _, _) = previous
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
    if use_checkpoint and not multimask and torch.is_grad_enabled():
        return point_inputs, checkpoint(model._forward_sam_heads, *heads_args, use_reentrant=False)
    return point_inputs, model._forward_sam_heads(*heads_args)
