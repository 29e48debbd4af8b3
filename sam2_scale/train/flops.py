"""FLOPs of a training micro-batch, for MFU (model FLOPs) and HFU (hardware FLOPs).

Model FLOPs are the matmul, convolution and attention FLOPs of the forward and backward as the
maths needs them, with nothing recomputed. Hardware FLOPs add what the run executes on top:
forward passes recomputed by activation checkpointing and, on CUDA, the score matrix that fused
attention kernels recompute in their backward.

The count depends on the prompt scenario (mask- or point-prompted, how many correction clicks),
so it is averaged over scenarios drawn from the run's prompt distribution, not taken from one
draw. It runs on a copy of the model on the meta device: shapes only, no memory, no device
time. A micro-batch of B clips and O objects costs B * per_clip + O * per_object exactly (the
image encoder runs per frame, everything after it per object), so two counts per scenario give
the cost of any batch of that clip length and resolution.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from ..data.batch import Batch
from ..model import build_sam2, set_activation_checkpointing
from ..objective import unroll_clip
from ..objective.prompts import PixelNoise, sample_scenario


class _AttentionScoreFlops(TorchFunctionMode):
    """FLOPs of the score matrices (Q K^T) of every attention call: what fused kernels redo in backward."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            self.flops += 2 * q.shape[:-1].numel() * k.shape[-2] * q.shape[-1]
        return func(*args, **(kwargs or {}))


class MicroBatchFlops:
    """`flops(batch)` -> (model FLOPs, hardware FLOPs) of one forward + backward of `batch`."""

    def __init__(self, cfg, fused_attention, num_scenarios=16, seed=12345):
        """cfg: the run's Config (model size, image size, prompts, checkpointed regions);
        fused_attention: whether attention runs in fused kernels (CUDA) that recompute scores."""
        self.cfg = cfg
        self.fused_attention = fused_attention
        self.num_scenarios = num_scenarios
        self.seed = seed
        self.model = build_sam2(cfg.model.size, image_size=cfg.model.image_size, device="meta").train()
        self._coefficients = {}  # (frames, height, width) -> per-clip and per-object FLOPs

    def prepare(self, num_frames, height, width):
        """Count the clips of this length and size now (a few seconds to a minute on the host),
        rather than inside the first step that brings one."""
        key = (num_frames, height, width)
        if key not in self._coefficients:
            self._coefficients[key] = self._average_over_scenarios(*key)
        return self._coefficients[key]

    def __call__(self, batch):
        (model_clip, model_obj), (hw_clip, hw_obj) = self.prepare(batch.num_frames, *batch.masks.shape[-2:])
        clips, objects = batch.num_clips, batch.num_objects
        return model_clip * clips + model_obj * objects, hw_clip * clips + hw_obj * objects

    def _average_over_scenarios(self, num_frames, height, width):
        gen = np.random.default_rng(self.seed)
        counted = {}  # scenarios that launch the same passes cost the same: count each once
        sums = np.zeros((2, 2))
        for _ in range(self.num_scenarios):
            scenario = sample_scenario(num_frames, self.cfg.prompts, gen)
            # Which clicks sample from the GT changes no shape; the rest of the scenario does.
            passes = (scenario.use_pt_input, tuple(scenario.init_cond_frames), tuple(scenario.frames_to_correct))
            passes += (tuple(sorted(scenario.prompt_kind.items())),)
            if passes not in counted:
                one, two = (np.array(self._count(scenario, num_frames, height, width, n)) for n in (1, 2))
                counted[passes] = np.stack([2 * one - two, two - one])  # (per clip, per object) x (model, hardware)
            sums += counted[passes]
        (model_clip, hardware_clip), (model_obj, hardware_obj) = (sums / self.num_scenarios).tolist()
        return (model_clip, model_obj), (hardware_clip, hardware_obj)

    def _count(self, scenario, num_frames, height, width, num_objects):
        """(model, hardware) FLOPs of one clip with `num_objects` objects under `scenario`."""
        shape = (num_frames, height, width, [num_objects])
        model_flops, score_flops = self.forward_backward(scenario, *shape, checkpointed=())
        regions = tuple(self.cfg.model.activation_checkpointing)
        hardware = self.forward_backward(scenario, *shape, checkpointed=regions)[0] if regions else model_flops
        if self.fused_attention:
            hardware += score_flops
        return model_flops, hardware

    def forward_backward(self, scenario, num_frames, height, width, objects_per_clip, checkpointed=()):
        """(FLOPs counted, attention score FLOPs of the forward) of one forward + backward of
        clips holding `objects_per_clip` objects, with the `checkpointed` regions recomputed."""
        set_activation_checkpointing(self.model, checkpointed)
        num_objects = sum(objects_per_clip)
        frames = torch.empty(num_frames, len(objects_per_clip), 3, height, width, dtype=torch.uint8, device="meta")
        masks = torch.empty(num_frames, num_objects, height, width, dtype=torch.bool, device="meta")
        clip_of_object = torch.repeat_interleave(torch.arange(len(objects_per_clip)), torch.tensor(objects_per_clip))
        idx = torch.stack([torch.arange(num_frames)[:, None].expand(-1, num_objects), clip_of_object.expand(num_frames, -1)], -1)
        batch = Batch(frames, masks, idx, list(objects_per_clip))
        noise = PixelNoise(0, objects_per_clip, "meta")
        counter, scores = FlopCounterMode(display=False), _AttentionScoreFlops()
        with counter:
            with scores:
                outputs = unroll_clip(self.model, batch, scenario, noise, self.cfg.prompts)
            # The loss adds no matmul: any scalar that depends on every output back-propagates
            # through the same model ops.
            total = sum(
                sum(m.sum() for m in out[key])
                for out in outputs
                for key in ("multistep_pred_multimasks_high_res", "multistep_pred_ious", "multistep_object_score_logits")
            )
            total.backward()
        self.model.zero_grad(set_to_none=True)
        return counter.get_total_flops(), scores.flops
