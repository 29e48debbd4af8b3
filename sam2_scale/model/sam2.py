"""SAM2Base: per-frame tracking with a memory bank, the SAM 2.1 variant.

The public surface (method names, arguments, output dicts, sub-module attribute names) is the
one of Meta's `sam2.modeling.sam2_base.SAM2Base`, so code written against it runs unchanged.
Only the SAM 2.1 configuration is implemented; the flags that configuration turns on are kept
as read-only attributes for code that inspects them.

Shapes: after the image encoder the batch dimension is *objects* (each object carries a copy
of its frame's features). "Sequence-first" tensors are (H*W, B, C).
"""

from typing import NamedTuple

import torch
import torch.nn as nn

from .attention import checkpoint
from .compile import mark_dynamic, mark_objects_dynamic
from .layers import MLP, downsample_antialias, trunc_normal_, upsample_bilinear
from .mask_decoder import MaskDecoder
from .position import sine_1d
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayTransformer

# Logit given to every pixel of an object predicted absent.
NO_OBJ_SCORE = -1024.0


def select_closest_cond_frames(frame_idx, cond_frame_outputs, max_cond_frame_num):
    """Split conditioning frames into those attended to (at most `max_cond_frame_num`, -1 = all:
    the closest before, the closest at/after, then the nearest others) and the rest."""
    if max_cond_frame_num == -1 or len(cond_frame_outputs) <= max_cond_frame_num:
        return cond_frame_outputs, {}
    if max_cond_frame_num < 2:
        raise ValueError("max_cond_frames_in_attn must allow at least 2 conditioning frames")
    selected = {}
    before = max((t for t in cond_frame_outputs if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond_frame_outputs[before]
    after = min((t for t in cond_frame_outputs if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond_frame_outputs[after]
    others = sorted((t for t in cond_frame_outputs if t not in selected), key=lambda t: abs(t - frame_idx))
    for t in others[: max_cond_frame_num - len(selected)]:
        selected[t] = cond_frame_outputs[t]
    unselected = {t: v for t, v in cond_frame_outputs.items() if t not in selected}
    return selected, unselected


class SamOutputs(NamedTuple):
    """One pass of the SAM heads (prompt encoder + mask decoder). A tuple, so code written for
    the reference's 7-tuple keeps working."""

    low_res_multimasks: torch.Tensor  # (B, M, S/4, S/4) logits, M = 3 or 1
    high_res_multimasks: torch.Tensor  # (B, M, S, S)
    ious: torch.Tensor  # (B, M) predicted IoU
    low_res_masks: torch.Tensor  # (B, 1, S/4, S/4): the best candidate by predicted IoU
    high_res_masks: torch.Tensor  # (B, 1, S, S)
    obj_ptr: torch.Tensor  # (B, C)
    object_score_logits: torch.Tensor  # (B, 1)


def seq_to_map(x, hw):
    """(H*W, B, C) -> (B, C, H, W)."""
    return x.permute(1, 2, 0).reshape(x.shape[1], x.shape[2], *hw)


class SAM2Base(nn.Module):
    # SAM 2.1 switches, fixed by this implementation (read by code written for the reference).
    use_high_res_features_in_sam = True
    num_feature_levels = 3
    directly_add_no_mem_embed = True
    use_mask_input_as_output_without_sam = True
    multimask_output_in_sam = True
    multimask_output_for_tracking = True
    multimask_min_pt_num = 0
    multimask_max_pt_num = 1
    use_multimask_token_for_obj_ptr = True
    iou_prediction_use_sigmoid = True
    use_obj_ptrs_in_encoder = True
    add_tpos_enc_to_obj_ptrs = True
    proj_tpos_enc_in_obj_ptrs = True
    use_signed_tpos_enc_to_obj_ptrs = True
    pred_obj_scores = True
    pred_obj_scores_mlp = True
    fixed_no_obj_ptr = True
    soft_no_obj_ptr = False
    use_mlp_for_obj_ptr_proj = True

    # Activation checkpointing of the launch-bound parts (the Hiera blocks and memory-attention
    # layers have their own switches): every SAM-heads pass, every memory-encoder pass.
    checkpoint_heads = False
    checkpoint_memory_encoder = False

    def __init__(
        self,
        image_encoder,
        memory_attention,
        memory_encoder,
        num_maskmem=7,
        image_size=1024,
        backbone_stride=16,
        sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0,
        max_cond_frames_in_attn=-1,
        max_obj_ptrs_in_encoder=16,
        memory_temporal_stride_for_eval=1,
        only_obj_ptrs_in_the_past_for_eval=True,
        binarize_mask_from_pts_for_mem_enc=False,
        non_overlap_masks_for_mem_enc=False,
        dynamic_multimask_via_stability=False,
    ):
        super().__init__()
        self.image_encoder = image_encoder
        self.hidden_dim = image_encoder.neck.d_model
        self.mem_dim = memory_encoder.out_proj.weight.shape[0]
        self.image_size = image_size
        self.backbone_stride = backbone_stride
        self.num_maskmem = num_maskmem
        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc
        self.max_cond_frames_in_attn = max_cond_frames_in_attn
        self.max_obj_ptrs_in_encoder = max_obj_ptrs_in_encoder
        self.memory_temporal_stride_for_eval = memory_temporal_stride_for_eval
        self.only_obj_ptrs_in_the_past_for_eval = only_obj_ptrs_in_the_past_for_eval
        self.binarize_mask_from_pts_for_mem_enc = binarize_mask_from_pts_for_mem_enc
        self.non_overlap_masks_for_mem_enc = non_overlap_masks_for_mem_enc

        # Turns a GT mask prompt (image size) into a stride-4 mask prompt for the SAM heads,
        # used only to get an object pointer on mask-prompted frames.
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.memory_attention = memory_attention
        self.memory_encoder = memory_encoder

        # Learned tokens (registered on this module, so they lead the state dict).
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(num_maskmem, 1, 1, self.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        # Unused in 2.1 (no_mem_embed is added directly); kept for checkpoint compatibility.
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, self.hidden_dim))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, self.mem_dim))
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr, self.no_obj_embed_spatial):
            trunc_normal_(p, std=0.02)

        self.sam_prompt_embed_dim = self.hidden_dim
        self.sam_image_embedding_size = image_size // backbone_stride
        grid = (self.sam_image_embedding_size, self.sam_image_embedding_size)
        self.sam_prompt_encoder = PromptEncoder(self.hidden_dim, grid, (image_size, image_size), mask_in_chans=16)
        self.sam_mask_decoder = MaskDecoder(
            TwoWayTransformer(depth=2, embedding_dim=self.hidden_dim, num_heads=8, mlp_dim=2048),
            transformer_dim=self.hidden_dim,
            dynamic_multimask_via_stability=dynamic_multimask_via_stability,
        )
        self.obj_ptr_proj = MLP(self.hidden_dim, self.hidden_dim, self.hidden_dim, 3)
        self.obj_ptr_tpos_proj = nn.Linear(self.hidden_dim, self.mem_dim)
        self._tpos_tables = {}  # (num_frames, t_diff_max, device) -> sine table; not state

    @property
    def device(self):
        return next(self.parameters()).device

    def forward(self, *args, **kwargs):
        raise NotImplementedError("SAM2Base is driven frame by frame: use forward_image and track_step")

    # ------------------------------------------------------------------ image features

    def forward_image(self, img_batch):
        """Image encoder on (B, 3, S, S). The stride-4/8 levels are projected for the decoder here,
        once per image, instead of once per object and prompt."""
        backbone_out = self.image_encoder(img_batch)
        fpn = backbone_out["backbone_fpn"]
        fpn[0] = self.sam_mask_decoder.conv_s0(fpn[0])
        fpn[1] = self.sam_mask_decoder.conv_s1(fpn[1])
        return backbone_out

    def _prepare_backbone_features(self, backbone_out):
        """Flatten the last `num_feature_levels` maps and pos-encs to sequence-first tensors."""
        backbone_out = backbone_out.copy()
        feature_maps = backbone_out["backbone_fpn"][-self.num_feature_levels :]
        pos_maps = backbone_out["vision_pos_enc"][-self.num_feature_levels :]
        feat_sizes = [(x.shape[-2], x.shape[-1]) for x in pos_maps]
        vision_feats = [x.flatten(2).permute(2, 0, 1) for x in feature_maps]
        vision_pos_embeds = [x.flatten(2).permute(2, 0, 1) for x in pos_maps]
        return backbone_out, vision_feats, vision_pos_embeds, feat_sizes

    # ------------------------------------------------------------------ SAM heads

    def _gate_obj_ptr(self, obj_ptr, is_obj_appearing):
        """Absent objects get the learned `no_obj_ptr` instead of their pointer."""
        present = is_obj_appearing.float()
        return present * obj_ptr + (1 - present) * self.no_obj_ptr

    def _forward_sam_heads(
        self, backbone_features, point_inputs=None, mask_inputs=None, high_res_features=None, multimask_output=False
    ):
        """Prompt encoder + mask decoder on memory-conditioned features (B, C, h, w).

        Returns `SamOutputs`; the multimask outputs have 3 masks when `multimask_output`, else
        1, and the single masks are the best by predicted IoU.
        """
        b, device = backbone_features.shape[0], backbone_features.device
        if point_inputs is not None:
            coords, labels = point_inputs["point_coords"], point_inputs["point_labels"]
        else:
            coords = torch.zeros(b, 1, 2, device=device)
            labels = -torch.ones(b, 1, dtype=torch.int32, device=device)
        # The prompt encoder appends a padding point when there is no box, which is always the case
        # here (boxes come as two labelled points). Appended now, in eager code, so the compiled
        # heads never see a single point: a size the compiler would make a graph of its own.
        coords = torch.cat([coords, torch.zeros(b, 1, 2, device=device)], dim=1)
        labels = torch.cat([labels, -torch.ones(b, 1, dtype=labels.dtype, device=device)], dim=1)
        # Objects and prompt points vary from call to call.
        mark_objects_dynamic(backbone_features, mask_inputs, *(high_res_features or []))
        mark_dynamic(coords, 0, 1)
        mark_dynamic(labels, 0, 1)
        # Looked up here, not inside the compiled heads: a cache lookup would break their graph.
        image_pe = self.sam_prompt_encoder.get_dense_pe()
        args = (backbone_features, image_pe, coords, labels, mask_inputs, high_res_features, multimask_output)
        if self.checkpoint_heads and self.training and torch.is_grad_enabled():
            return SamOutputs(*checkpoint(self._sam_heads, *args))
        return self._sam_heads(*args)

    def _sam_heads(self, backbone_features, image_pe, coords, labels, mask_inputs, high_res_features, multimask_output):
        b, device = backbone_features.shape[0], backbone_features.device
        mask_prompt = None
        if mask_inputs is not None:
            mask_prompt = mask_inputs
            if mask_inputs.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
                mask_prompt = downsample_antialias(mask_inputs.float(), self.sam_prompt_encoder.mask_input_size)

        sparse, dense = self.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask_prompt, pad=False)
        low_res_multimasks, ious, sam_output_tokens, object_score_logits = self.sam_mask_decoder(
            image_embeddings=backbone_features,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res_features,
        )
        is_obj_appearing = object_score_logits > 0
        low_res_multimasks = torch.where(is_obj_appearing[:, None, None], low_res_multimasks, NO_OBJ_SCORE)
        low_res_multimasks = low_res_multimasks.float()
        high_res_multimasks = upsample_bilinear(low_res_multimasks, (self.image_size, self.image_size))

        sam_output_token = sam_output_tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=device)
            low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
            high_res_masks = high_res_multimasks[rows, best].unsqueeze(1)
            if sam_output_tokens.shape[1] > 1:
                sam_output_token = sam_output_tokens[rows, best]
        else:
            low_res_masks, high_res_masks = low_res_multimasks, high_res_multimasks

        obj_ptr = self._gate_obj_ptr(self.obj_ptr_proj(sam_output_token), is_obj_appearing)
        return SamOutputs(
            low_res_multimasks, high_res_multimasks, ious, low_res_masks, high_res_masks, obj_ptr, object_score_logits
        )

    def _use_mask_as_output(self, backbone_features, high_res_features, mask_inputs):
        """A GT-mask prompt becomes the output itself (logits +-10); the SAM heads still run,
        prompted by the downsampled mask, to produce the object pointer."""
        mask = mask_inputs.float()
        high_res_masks = mask * 20.0 - 10.0
        low_res_masks = downsample_antialias(high_res_masks, (high_res_masks.shape[-2] // 4, high_res_masks.shape[-1] // 4))
        ious = mask.new_ones(mask.shape[0], 1)
        obj_ptr = self._forward_sam_heads(
            backbone_features, mask_inputs=self.mask_downsample(mask), high_res_features=high_res_features
        ).obj_ptr
        is_obj_appearing = torch.any(mask.flatten(1) > 0.0, dim=1)[..., None]
        object_score_logits = 20.0 * is_obj_appearing.float() - 10.0
        obj_ptr = self._gate_obj_ptr(obj_ptr, is_obj_appearing)
        return SamOutputs(low_res_masks, high_res_masks, ious, low_res_masks, high_res_masks, obj_ptr, object_score_logits)

    def _use_multimask(self, is_init_cond_frame, point_inputs):
        """3 candidate masks whenever there are at most 1 prompt point (a box counts 2)."""
        num_pts = 0 if point_inputs is None else point_inputs["point_labels"].shape[1]
        return (
            self.multimask_output_in_sam
            and (is_init_cond_frame or self.multimask_output_for_tracking)
            and self.multimask_min_pt_num <= num_pts <= self.multimask_max_pt_num
        )

    # ------------------------------------------------------------------ memory

    def _memory_frame_indices(self, frame_idx, track_in_reverse):
        """(t_pos, frame index) of the non-conditioning memory slots, nearest first (t_pos 6..1).

        The previous frame is always the first slot; the others follow the eval stride."""
        stride = 1 if self.training else self.memory_temporal_stride_for_eval
        slots = []
        for t_pos in range(1, self.num_maskmem):
            t_rel = self.num_maskmem - t_pos  # frames back from the current one
            if t_rel == 1:
                prev = frame_idx + 1 if track_in_reverse else frame_idx - 1
            elif not track_in_reverse:
                prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            else:
                prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
            slots.append((t_pos, prev))
        return slots

    def _object_pointer_tokens(self, frame_idx, selected_cond, unselected_cond, non_cond, num_frames, track_in_reverse, batch):
        """Object pointers of conditioning and recent frames as memory tokens, with their
        temporal encodings. Returns (tokens (P*4, B, 64), pos (P*4, B, 64)) or None."""
        max_ptrs = min(num_frames, self.max_obj_ptrs_in_encoder)
        if not self.training and self.only_obj_ptrs_in_the_past_for_eval:
            ptr_cond = {t: o for t, o in selected_cond.items() if (t >= frame_idx if track_in_reverse else t <= frame_idx)}
        else:
            ptr_cond = selected_cond
        sign = -1 if track_in_reverse else 1
        # Signed distance for conditioning frames (future ones negative), unsigned otherwise.
        pos_and_ptrs = [((frame_idx - t) * sign, out["obj_ptr"]) for t, out in ptr_cond.items()]
        for t_diff in range(1, max_ptrs):
            t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
            if t < 0 or t >= num_frames:
                break
            out = non_cond.get(t, unselected_cond.get(t))
            if out is not None:
                pos_and_ptrs.append((t_diff, out["obj_ptr"]))
        if not pos_and_ptrs:
            return None

        positions, ptrs = zip(*pos_and_ptrs)
        obj_ptrs = torch.stack(ptrs, dim=0)  # (P, B, C)
        # Normalised by the clip's pointer budget: 7 for 8-frame training clips, 15 for long videos.
        table = self._temporal_encoding_table(num_frames, max_ptrs - 1, obj_ptrs.device)
        # Rows picked by Python index (views, one stack): no tensor of positions is copied to the device.
        obj_pos = torch.stack([table[p + num_frames - 1] for p in positions])
        obj_pos = self.obj_ptr_tpos_proj(obj_pos).unsqueeze(1).expand(-1, batch, self.mem_dim)
        # Each 256-d pointer becomes 4 tokens of 64-d, sharing its temporal encoding.
        split = self.hidden_dim // self.mem_dim
        obj_ptrs = obj_ptrs.reshape(-1, batch, split, self.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
        obj_pos = obj_pos.repeat_interleave(split, dim=0)
        return obj_ptrs, obj_pos

    def _temporal_encoding_table(self, num_frames, t_diff_max, device):
        """sine_1d of every signed frame distance -(num_frames-1)..num_frames-1, / t_diff_max."""
        key = (num_frames, t_diff_max, str(device))
        if key not in self._tpos_tables:
            if len(self._tpos_tables) > 16:  # videos of many lengths (evaluation)
                self._tpos_tables.clear()
            distances = torch.arange(-(num_frames - 1), num_frames, device=device)
            self._tpos_tables[key] = sine_1d(distances / t_diff_max, dim=self.hidden_dim)
        return self._tpos_tables[key]

    def _prepare_memory_conditioned_features(
        self,
        frame_idx,
        is_init_cond_frame,
        current_vision_feats,
        current_vision_pos_embeds,
        feat_sizes,
        output_dict,
        num_frames,
        track_in_reverse=False,
    ):
        """pix_feat_with_mem (B, C, h, w): the frame's stride-16 features after memory attention,
        or plus `no_mem_embed` on an initial conditioning frame (no memory to attend to)."""
        b = current_vision_feats[-1].shape[1]
        hw = feat_sizes[-1]
        if is_init_cond_frame:
            return seq_to_map(current_vision_feats[-1] + self.no_mem_embed, hw)

        cond_outputs = output_dict["cond_frame_outputs"]
        if not cond_outputs:
            raise ValueError(f"frame {frame_idx} is not an initial conditioning frame but no conditioning frame exists yet")
        selected_cond, unselected_cond = select_closest_cond_frames(frame_idx, cond_outputs, self.max_cond_frames_in_attn)
        non_cond = output_dict["non_cond_frame_outputs"]
        # Conditioning frames take slot 0; recent frames slots 1..6 (nearest = 6).
        slots = [(0, out) for out in selected_cond.values()]
        for t_pos, prev in self._memory_frame_indices(frame_idx, track_in_reverse):
            out = non_cond.get(prev)
            slots.append((t_pos, out if out is not None else unselected_cond.get(prev)))

        device = current_vision_feats[-1].device
        memory, memory_pos = [], []
        for t_pos, prev in slots:
            if prev is None:
                continue
            # Evaluation stores memories in bf16 (as Meta's video predictor does): back to the compute dtype.
            feats = prev["maskmem_features"].to(device=device, dtype=current_vision_feats[-1].dtype, non_blocking=True)
            memory.append(feats.flatten(2).transpose(1, 2))
            pos = prev["maskmem_pos_enc"][-1].to(device).flatten(2).transpose(1, 2)
            memory_pos.append(pos + self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1])

        ptr_tokens = self._object_pointer_tokens(
            frame_idx, selected_cond, unselected_cond, non_cond, num_frames, track_in_reverse, b
        )
        if ptr_tokens is None:
            empty = memory[0].new_zeros(0, b, self.mem_dim)
            ptr_tokens = (empty, empty)

        pix_feat_with_mem = self.memory_attention(
            curr=current_vision_feats[-1],
            curr_pos=current_vision_pos_embeds[-1],
            memory=torch.stack(memory, dim=1),  # (B, frames, h*w, 64)
            memory_pos=torch.stack(memory_pos, dim=1),
            obj_ptrs=ptr_tokens[0].transpose(0, 1),  # (B, P, 64)
            obj_ptrs_pos=ptr_tokens[1].transpose(0, 1),
        )
        return seq_to_map(pix_feat_with_mem, hw)

    def _encode_new_memory(self, current_vision_feats, feat_sizes, pred_masks_high_res, object_score_logits, is_mask_from_pts):
        """Memory of this frame from its *raw* stride-16 features and its final high-res mask."""
        pix_feat = seq_to_map(current_vision_feats[-1], feat_sizes[-1])
        if self.non_overlap_masks_for_mem_enc and not self.training:
            pred_masks_high_res = self._apply_non_overlapping_constraints(pred_masks_high_res)
        if self.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts and not self.training:
            mask_for_mem = (pred_masks_high_res > 0).float()
        else:
            mask_for_mem = torch.sigmoid(pred_masks_high_res)
        mask_for_mem = mask_for_mem * self.sigmoid_scale_for_mem_enc + self.sigmoid_bias_for_mem_enc
        mark_objects_dynamic(pix_feat, mask_for_mem)
        if self.checkpoint_memory_encoder and self.training and torch.is_grad_enabled():
            out = checkpoint(self.memory_encoder, pix_feat, mask_for_mem, True)
        else:
            out = self.memory_encoder(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
        maskmem_features = out["vision_features"]
        # Memories of frames where the object is absent carry a learned marker.
        # Summed in fp32 and cast back, so the memory keeps the autocast dtype.
        is_obj_absent = 1 - (object_score_logits > 0).float()
        marker = is_obj_absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        maskmem_features = (maskmem_features + marker).to(maskmem_features.dtype)
        return maskmem_features, out["vision_pos_enc"]

    def _apply_non_overlapping_constraints(self, pred_masks):
        """Keep only the highest-scoring object per pixel (others clamped to <= -10)."""
        if pred_masks.shape[0] == 1:
            return pred_masks
        winner = torch.argmax(pred_masks, dim=0, keepdim=True)
        obj_ids = torch.arange(pred_masks.shape[0], device=pred_masks.device)[:, None, None, None]
        return torch.where(winner == obj_ids, pred_masks, torch.clamp(pred_masks, max=-10.0))

    # ------------------------------------------------------------------ tracking

    def _track_step(
        self,
        frame_idx,
        is_init_cond_frame,
        current_vision_feats,
        current_vision_pos_embeds,
        feat_sizes,
        point_inputs,
        mask_inputs,
        output_dict,
        num_frames,
        track_in_reverse,
        prev_sam_mask_logits,
    ):
        current_out = {"point_inputs": point_inputs, "mask_inputs": mask_inputs}
        high_res_features = [seq_to_map(x, s) for x, s in zip(current_vision_feats[:-1], feat_sizes[:-1])]
        if mask_inputs is not None:
            pix_feat = seq_to_map(current_vision_feats[-1], feat_sizes[-1])
            sam_outputs = self._use_mask_as_output(pix_feat, high_res_features, mask_inputs)
        else:
            pix_feat = self._prepare_memory_conditioned_features(
                frame_idx,
                is_init_cond_frame,
                current_vision_feats[-1:],
                current_vision_pos_embeds[-1:],
                feat_sizes[-1:],
                output_dict,
                num_frames,
                track_in_reverse,
            )
            if prev_sam_mask_logits is not None:
                # Correction clicks: the previous prediction's logits are the mask prompt.
                if point_inputs is None:
                    raise ValueError("prev_sam_mask_logits needs point_inputs")
                mask_inputs = prev_sam_mask_logits
            sam_outputs = self._forward_sam_heads(
                pix_feat,
                point_inputs=point_inputs,
                mask_inputs=mask_inputs,
                high_res_features=high_res_features,
                multimask_output=self._use_multimask(is_init_cond_frame, point_inputs),
            )
        return current_out, sam_outputs, high_res_features, pix_feat

    def _encode_memory_in_output(
        self, current_vision_feats, feat_sizes, point_inputs, run_mem_encoder, high_res_masks, object_score_logits, current_out
    ):
        if run_mem_encoder and self.num_maskmem > 0:
            current_out["maskmem_features"], current_out["maskmem_pos_enc"] = self._encode_new_memory(
                current_vision_feats, feat_sizes, high_res_masks, object_score_logits, is_mask_from_pts=point_inputs is not None
            )
        else:
            current_out["maskmem_features"] = None
            current_out["maskmem_pos_enc"] = None

    def track_step(
        self,
        frame_idx,
        is_init_cond_frame,
        current_vision_feats,
        current_vision_pos_embeds,
        feat_sizes,
        point_inputs,
        mask_inputs,
        output_dict,
        num_frames,
        track_in_reverse=False,
        run_mem_encoder=True,
        prev_sam_mask_logits=None,
    ):
        """Segment one frame given its prompts and the memory in `output_dict`.

        `output_dict` = {"cond_frame_outputs": {t: out}, "non_cond_frame_outputs": {t: out}}.
        Returns {point_inputs, mask_inputs, pred_masks (B,1,S/4,S/4), pred_masks_high_res
        (B,1,S,S), obj_ptr (B,C), maskmem_features (B,64,S/16,S/16), maskmem_pos_enc [..]} and,
        in eval mode, object_score_logits (B,1).
        """
        current_out, sam_outputs, _, _ = self._track_step(
            frame_idx,
            is_init_cond_frame,
            current_vision_feats,
            current_vision_pos_embeds,
            feat_sizes,
            point_inputs,
            mask_inputs,
            output_dict,
            num_frames,
            track_in_reverse,
            prev_sam_mask_logits,
        )
        _, _, _, low_res_masks, high_res_masks, obj_ptr, object_score_logits = sam_outputs
        current_out["pred_masks"] = low_res_masks
        current_out["pred_masks_high_res"] = high_res_masks
        current_out["obj_ptr"] = obj_ptr
        if not self.training:
            current_out["object_score_logits"] = object_score_logits
        self._encode_memory_in_output(
            current_vision_feats, feat_sizes, point_inputs, run_mem_encoder, high_res_masks, object_score_logits, current_out
        )
        return current_out
