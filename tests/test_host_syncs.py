"""The training micro-batch never makes the host wait for the device.

Checked on the CPU with `HostSyncs`, a dispatch mode that records value reads, tensors built from
Python data, data-dependent output sizes and device-to-host copies: the same operators that
block a GPU step. The micro-batch runs through the engine's `TrainingStep` (prompt simulation,
the batched unroll of two clips, the loss, backward) inside a one-rank process group, so the
loss normaliser's all-reduce runs too.
"""

import numpy as np
import pytest
import torch
import torch.distributed as dist
from tracking_driver import synthetic_clip

from sam2_scale.config import load_config
from sam2_scale.data.batch import Batch
from sam2_scale.model import build_sam2
from sam2_scale.objective.prompts import micro_batch_seeds, sample_scenario
from sam2_scale.train.engine import TrainingStep
from sam2_scale.train.sync_check import HostSyncs


def two_clip_batch(num_frames, size, objects=(2, 1)):
    clips = [synthetic_clip(num_frames, n, size, seed=i) for i, n in enumerate(objects)]
    frames = torch.stack([((f - f.min()) / (f.max() - f.min()) * 255).to(torch.uint8) for f, _ in clips], dim=1)
    masks = torch.cat([m[:, :, 0] for _, m in clips], dim=1)
    clip_of_object = torch.repeat_interleave(torch.arange(len(objects)), torch.tensor(objects))
    idx = torch.stack([torch.arange(num_frames)[:, None].expand(-1, masks.shape[1]), clip_of_object.expand(num_frames, -1)], -1)
    return Batch(frames, masks, idx, list(objects))


def find_micro_batch(cfg, num_frames, want):
    """The first micro-batch index whose scenario satisfies `want`."""
    for k in range(10_000):
        scenario_seed, _ = micro_batch_seeds(cfg.train.seed, k, 0)
        scenario = sample_scenario(num_frames, cfg.prompts, np.random.default_rng(scenario_seed))
        if want(scenario):
            return k, scenario
    raise AssertionError("no such scenario")


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_training_micro_batch_has_no_host_sync(one_rank_group):
    cfg = load_config(
        None,
        ["prompts.prob_to_sample_from_gt=0.5", "prompts.num_frames_to_correct=3", "prompts.num_correction_pt_per_frame=2"],
    )
    torch.manual_seed(0)
    model = build_sam2("tiny", image_size=64).train()
    step = TrainingStep(model, cfg, rank=0)
    batch = two_clip_batch(4, 64)
    every_prompt = find_micro_batch(
        cfg,
        4,
        lambda s: (
            {"click", "box"} <= set(s.prompt_kind.values())
            and len(s.frames_to_correct) > len(s.init_cond_frames)
            and any(any(f) for f in s.click_from_gt.values())
        ),
    )
    mask_prompted = find_micro_batch(cfg, 4, lambda s: not s.use_pt_input)
    # Warm-up: per-device constants (normalisation statistics, position tables) are built once.
    step(batch, every_prompt[0])["core_loss"].backward()
    for k, scenario in (every_prompt, mask_prompted):
        model.zero_grad(set_to_none=True)
        with HostSyncs() as syncs:
            losses = step(batch, k)
            losses["core_loss"].backward()
        assert not syncs.found, f"scenario {scenario}:\n{syncs.report()}"
        assert syncs.kernel_count > 1000, "the detector must have seen the whole micro-batch"
        assert any(p.grad is not None for p in model.sam_mask_decoder.parameters())


def test_detector_finds_what_blocks_a_gpu():
    """Each kind of synchronisation the step must avoid is caught, even on a CPU."""
    x = torch.rand(4, 5)
    cases = {
        "reads a value": lambda: x.sum().item(),
        "Python data": lambda: torch.tensor([1.0, 2.0]),
        "data-dependent": lambda: x[x > 0.5],
        "nonzero": lambda: (x > 0.5).nonzero(),
        "condition": lambda: bool(x.max() > 0.5),
        "list": lambda: torch.randperm(5).tolist(),
    }
    for name, fn in cases.items():
        with HostSyncs() as syncs:
            fn()
        assert syncs.found, name
    with HostSyncs() as syncs:
        (x * 2 + 1).softmax(-1).argmax(-1)
        torch.where(x > 0.5, x, 0.0)
    assert not syncs.found, syncs.report()
