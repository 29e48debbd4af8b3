"""Full-video semi-supervised tracking with the semantics of Meta's released `SAM2VideoPredictor`
as its VOS inference tool drives it, computed frame by frame in one pass.

- Frames: RGB resized to the model's square input with PIL's default filter, as the released
  frame loader does; the image encoder runs once per frame (in chunks of frames).
- Prompts: each object's ground-truth mask on the first annotated frame where it is visible
  (resized with antialiasing, >= 0.5). The mask is the output on that frame (SAM 2.1's
  `use_mask_input_as_output_without_sam`); its memory is encoded from that output's low-res
  logits, upsampled, as the released predictor does before propagating. Objects visible on the
  first frame (DAVIS, MOSE, SA-V) are all prompted there; an object that appears later is
  prompted where it appears and tracked from there on, as the tool's per-object mode does.
- Tracking: each object attends only to its own memory (its conditioning frame and the last
  frames' memories, its object pointers); objects prompted on the same frame are one batch.
  Memory features are stored in bf16, as the released predictor stores them.
- Output: each frame's low-res logits resized bilinearly to the video's own size, an object not
  yet prompted at -1024; with `non_overlap`, only the best-scoring object keeps a positive logit
  at each pixel (palette outputs: DAVIS, MOSE), not with per-object outputs (SA-V).
  No hole filling or other post-processing, as in the published evaluations.
"""

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import normalize_frames

NO_OBJECT_SCORE = -1024.0  # logits of an object on frames before its prompt


class _Group:
    """Objects prompted on the same frame, tracked as one batch with their own memory."""

    def __init__(self, objects, start, prompt_masks):
        self.objects = objects  # indices into the video's object_ids
        self.start = start
        self.prompt_masks = prompt_masks  # (n, 1, S, S) float, consumed on the start frame
        self.memory = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}


class VideoPredictor:
    def __init__(self, model, non_overlap, frames_per_chunk=8, autocast_dtype=None):
        """model: a SAM2Base (put in eval mode while predicting); non_overlap: the palette-output
        constraint; frames_per_chunk: frames through the image encoder at once."""
        self.model = model
        self.non_overlap = non_overlap
        self.frames_per_chunk = frames_per_chunk
        self.autocast_dtype = autocast_dtype
        # Non-conditioning outputs older than this are never read again (memory slots reach back
        # num_maskmem - 1 frames, object pointers max_obj_ptrs_in_encoder - 1): drop them.
        self._history = max(model.num_maskmem, model.max_obj_ptrs_in_encoder) * max(1, model.memory_temporal_stride_for_eval)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _model_frame(self, image):
        size = self.model.image_size
        return torch.from_numpy(np.array(image.resize((size, size)))).permute(2, 0, 1)

    def _frame_features(self, video, first):
        """(position, vision_feats, vision_pos, feat_sizes) of frames `first`.. in order; frames
        are decoded one chunk ahead on a thread while the model runs."""
        model, device = self.model, self.device
        chunks = [
            range(s, min(s + self.frames_per_chunk, video.num_frames))
            for s in range(first, video.num_frames, self.frames_per_chunk)
        ]

        def load(chunk):
            return torch.stack([self._model_frame(video.read_frame(i)) for i in chunk])

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(load, chunks[0]) if chunks else None
            for k, chunk in enumerate(chunks):
                frames = pending.result()
                pending = pool.submit(load, chunks[k + 1]) if k + 1 < len(chunks) else None
                with self._autocast():
                    _, feats, pos, sizes = model._prepare_backbone_features(
                        model.forward_image(normalize_frames(frames.to(device, non_blocking=True)))
                    )
                for j, i in enumerate(chunk):
                    yield i, [x[:, j : j + 1] for x in feats], [x[:, j : j + 1] for x in pos], sizes

    @torch.inference_mode()
    def predict(self, video):
        """Yields (position, logits (objects, H, W) float at the video's size, ground truth
        (objects, H, W) bool or None) for every frame of the video, in order."""
        model = self.model
        modes = {m: m.training for m in model.modules()}
        model.eval()
        try:
            yield from self._predict(video)
        finally:
            for m, training in modes.items():
                m.train(training)

    def _predict(self, video):
        model, device, size = self.model, self.device, self.model.image_size
        num_objects, low = len(video.object_ids), size // 4
        annotated = set(video.annotated)
        groups, started = [], np.zeros(num_objects, bool)
        empty_logits = torch.full((num_objects, video.height, video.width), NO_OBJECT_SCORE, device=device)
        first = video.annotated[0] if video.annotated else video.num_frames
        for i in range(first):  # nothing is prompted yet: every object is absent
            yield i, empty_logits, None
        for i, feats, pos, sizes in self._frame_features(video, first):
            gt = torch.from_numpy(video.read_masks(i)).to(device) if i in annotated else None
            if gt is not None:
                new = [int(k) for k in np.flatnonzero(~started) if gt[k].any()]
                if new:
                    started[new] = True
                    prompt = F.interpolate(
                        gt[new, None].float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
                    )
                    groups.append(_Group(new, i, (prompt >= 0.5).float()))
            low_res = torch.full((num_objects, 1, low, low), NO_OBJECT_SCORE, device=device)
            with self._autocast():
                for group in groups:
                    low_res[group.objects] = self._step(group, i, video.num_frames, feats, pos, sizes).float()
            logits = F.interpolate(low_res, size=(video.height, video.width), mode="bilinear", align_corners=False)
            if self.non_overlap:
                logits = model._apply_non_overlapping_constraints(logits)
            yield i, logits[:, 0], gt

    def _step(self, group, i, num_frames, feats, pos, sizes):
        """Low-res mask logits (n, 1, S/4, S/4) of the group's objects on frame i."""
        model, n = self.model, len(group.objects)
        feats = [x.expand(-1, n, -1) for x in feats]
        pos = [x.expand(-1, n, -1) for x in pos]
        frame = dict(
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=sizes,
            point_inputs=None,
            output_dict=group.memory,
            num_frames=num_frames,
        )
        if i == group.start:
            out = model.track_step(i, is_init_cond_frame=True, mask_inputs=group.prompt_masks, run_mem_encoder=False, **frame)
            # Memory of the prompt frame from the upsampled low-res output, counted as a user input.
            high_res = F.interpolate(out["pred_masks"], size=(model.image_size,) * 2, mode="bilinear", align_corners=False)
            out["maskmem_features"], out["maskmem_pos_enc"] = model._encode_new_memory(
                feats, sizes, high_res, out["object_score_logits"], is_mask_from_pts=True
            )
            group.prompt_masks = None
            key = "cond_frame_outputs"
        else:
            out = model.track_step(i, is_init_cond_frame=False, mask_inputs=None, run_mem_encoder=True, **frame)
            key = "non_cond_frame_outputs"
            group.memory[key].pop(i - self._history, None)
        group.memory[key][i] = {
            "maskmem_features": out["maskmem_features"].to(torch.bfloat16),
            "maskmem_pos_enc": out["maskmem_pos_enc"],
            "pred_masks": out["pred_masks"],
            "obj_ptr": out["obj_ptr"],
            "object_score_logits": out["object_score_logits"],
        }
        return out["pred_masks"]
