"""Drive any SAM2Base-like model (ours or the reference) through a short clip with every
prompt type, the way the video predictor and the training unroll call it."""

import torch


def run_clip(model, frames, gt_masks, seed=0):
    """frames (T, 3, S, S); gt_masks (T, B, 1, S, S) bool. Returns the per-frame outputs.

    Frame 0: mask prompt (object 1, if any, absent, so the no-object paths run).
    Frame 1: one positive click, then a correction click fed with the previous logits.
    Frame 2: a box (two labelled corner points), as a second conditioning frame.
    Later frames: tracked from memory.
    """
    gen = torch.Generator().manual_seed(seed)
    num_frames, num_objects = gt_masks.shape[:2]
    size = frames.shape[-1]
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    outputs = []
    for t in range(num_frames):
        backbone_out = model.forward_image(frames[t : t + 1])
        _, feats, pos, sizes = model._prepare_backbone_features(backbone_out)
        feats = [x.expand(-1, num_objects, -1) for x in feats]
        pos = [x.expand(-1, num_objects, -1) for x in pos]
        points, mask = None, None
        if t == 0:
            mask = gt_masks[0].clone()
            if num_objects > 1:
                mask[1] = False
        elif t == 1:
            xy = torch.randint(0, size, (num_objects, 1, 2), generator=gen).float()
            points = {"point_coords": xy, "point_labels": torch.ones(num_objects, 1, dtype=torch.int32)}
        elif t == 2:
            corners = torch.sort(torch.randint(0, size, (num_objects, 2, 2), generator=gen).float(), dim=1).values
            points = {"point_coords": corners, "point_labels": torch.tensor([[2, 3]] * num_objects, dtype=torch.int32)}
        is_cond = t <= 2
        out = model.track_step(
            frame_idx=t,
            is_init_cond_frame=(t == 0),
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=sizes,
            point_inputs=points,
            mask_inputs=mask,
            output_dict=output_dict,
            num_frames=num_frames,
            run_mem_encoder=(t != 1),
        )
        if t == 1:
            # A correction click on the same frame, prompted by the previous low-res logits.
            xy2 = torch.randint(0, size, (num_objects, 1, 2), generator=gen).float()
            points = {
                "point_coords": torch.cat([points["point_coords"], xy2], dim=1),
                "point_labels": torch.cat([points["point_labels"], torch.zeros(num_objects, 1, dtype=torch.int32)], dim=1),
            }
            first = out
            out = model.track_step(
                frame_idx=t,
                is_init_cond_frame=False,
                current_vision_feats=feats,
                current_vision_pos_embeds=pos,
                feat_sizes=sizes,
                point_inputs=points,
                mask_inputs=None,
                output_dict=output_dict,
                num_frames=num_frames,
                run_mem_encoder=True,
                prev_sam_mask_logits=first["pred_masks"],
            )
            outputs.append(first)
        key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
        output_dict[key][t] = out
        outputs.append(out)
    return outputs


def synthetic_clip(num_frames, num_objects, size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    frames = torch.randn(num_frames, 3, size, size, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(num_frames, num_objects, 1, size, size, dtype=torch.bool)
    for t in range(num_frames):
        for o in range(num_objects):
            cy, cx = (torch.rand(2, generator=gen) * size * 0.6 + size * 0.2).tolist()
            r = size * (0.1 + 0.1 * o)
            masks[t, o, 0] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return frames, masks
