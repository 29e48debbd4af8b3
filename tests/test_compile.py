"""Regional torch.compile: no graph break inside a region, and no recompilation once the first
steps have met every kind of call, while object count and memory-bank size keep changing.

Dynamo decides graphs, guards and breaks; the `aot_eager` backend traces the same graphs
(through AOT autograd, backward included) without generating kernels, which keeps this test
to CPU minutes. Kernels themselves are the GPU benchmark's business.
"""

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters
from tracking_driver import synthetic_clip

from sam2_scale.config import load_config
from sam2_scale.data.batch import Batch
from sam2_scale.model import build_sam2
from sam2_scale.model.layers import DropPath
from sam2_scale.objective.prompts import micro_batch_seeds, sample_scenario
from sam2_scale.train.engine import TrainingStep


def video_batch(num_frames, num_objects, seed, size=64):
    frames, masks = synthetic_clip(num_frames, num_objects, size, seed=seed)
    return Batch.from_clip(frames, masks[:, :, 0])


def images_batch(objects_per_image, seed, size=64):
    clips = [synthetic_clip(1, n, size, seed=seed + i) for i, n in enumerate(objects_per_image)]
    frames = torch.stack([f for f, _ in clips], dim=1)
    masks = torch.cat([m[:, :, 0] for _, m in clips], dim=1)
    clip_of_object = torch.repeat_interleave(torch.arange(len(clips)), torch.tensor(objects_per_image))
    idx = torch.stack([torch.zeros_like(clip_of_object), clip_of_object], dim=-1)[None]
    return Batch(frames, masks, idx, list(objects_per_image))


def micro_batches_with(cfg, num_frames, want, count=1):
    """Indices of micro-batches whose scenario satisfies `want`."""
    found = []
    for k in range(10_000):
        scenario = sample_scenario(num_frames, cfg.prompts, np.random.default_rng(micro_batch_seeds(cfg.train.seed, k, 0)[0]))
        if want(scenario):
            found.append(k)
            if len(found) == count:
                return found
    raise AssertionError("no such scenario")


@pytest.mark.slow
def test_regions_compile_once_without_breaks_and_give_the_eager_outputs():
    """One traced model serves both checks (tracing is nearly all of this test's time).

    1. No graph break in any region, and no recompile once the warm-up calls have met every kind
       of call, while object count, clip length and memory-bank size keep changing.
    2. Compiled = eager on one batch. aot_eager runs the traced graphs op by op: the loss equals
       eager's; gradients equal it up to the rounding of AOT autograd's decomposed backward. A
       random model sits at its decision thresholds (object present or not, which candidate mask,
       where a click lands), where 1e-7 of input noise already moves some gradients by 10 %, so
       they are compared as one vector.
    """
    cfg = load_config(
        None,
        [
            "model.image_size=64",
            "data.resolution=64",
            "train.compile=true",
            "train.compile_backend=aot_eager",
            "train.precision=fp32",
            "prompts.num_correction_pt_per_frame=3",
            "prompts.num_frames_to_correct=3",
        ],
    )
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=64, drop_path_rate=0.1).train()
    torch._dynamo.reset()
    counters.clear()
    step = TrainingStep(model, cfg, rank=0)

    def run(batch, k):
        step(batch, k)["core_loss"].backward()

    # Warm-up: every kind of call once, for one object and for several (sizes 1 are special).
    kinds = {
        "click": lambda s: s.prompt_kind.get(0) == "click" and len(s.frames_to_correct) > len(s.init_cond_frames),
        "box": lambda s: s.prompt_kind.get(0) == "box" and len(s.frames_to_correct) > len(s.init_cond_frames),
        "mask": lambda s: not s.use_pt_input and len(s.init_cond_frames) == 1,
    }
    for objects in (1, 2):
        for want in kinds.values():
            (k,) = micro_batches_with(cfg, 4, want)
            run(video_batch(4, objects, seed=k), k)
        for kind in ("click", "box"):
            (k,) = micro_batches_with(cfg, 1, lambda s, kind=kind: s.prompt_kind[0] == kind)
            run(images_batch([objects], seed=k), k)
    graphs_after_warmup = counters["stats"]["unique_graphs"]
    assert graphs_after_warmup > 0, "the regions must have compiled"

    # 20 steps: random scenarios, 1-3 objects per clip, clips of 3-6 frames (memory banks of
    # 1-6 frames), 1-3 images per batch.
    rng = np.random.default_rng(0)
    for k in range(100, 120):
        if k % 4 == 3:
            run(images_batch(list(rng.integers(1, 4, size=rng.integers(1, 4))), seed=k), k)
        else:
            run(video_batch(int(rng.integers(3, 7)), int(rng.integers(1, 4)), seed=k), k)

    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == graphs_after_warmup, "a region recompiled after the warm-up"

    # Compiled against eager (the same module under the "force_eager" stance), with the random
    # draws taken out: drop path keeps every sample (its compiled and eager draws come from two
    # different kernels, so they differ by design) and memory attention runs without dropout.
    for module in model.modules():
        if isinstance(module, DropPath):
            module.drop_prob = 0.0
            module.keep_prob.fill_(1.0)  # a tensor input of the graphs: no recompile
    model.memory_attention.eval()
    (k,) = micro_batches_with(cfg, 3, lambda s: s.use_pt_input and len(s.frames_to_correct) == 2)
    batch = video_batch(3, 2, seed=0)
    results = []
    for stance in ("force_eager", "default"):
        model.zero_grad(set_to_none=True)
        with torch.compiler.set_stance(stance):
            losses = step(batch, k)
            losses["core_loss"].backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((losses, grads))
    (eager_losses, eager), (compiled_losses, compiled) = results
    for key, value in eager_losses.items():
        torch.testing.assert_close(compiled_losses[key], value, msg=key)
    assert (compiled - eager).norm() <= 1e-3 * eager.norm()
