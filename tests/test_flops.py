"""FLOP counts for MFU: model FLOPs without recomputation, averaged over prompt scenarios;
hardware FLOPs with it."""

import numpy as np
import pytest

from sam2_scale.config import load_config
from sam2_scale.objective.prompts import ClipScenario, sample_scenario
from sam2_scale.train.flops import MicroBatchFlops


def estimator(*overrides, fused_attention=False):
    cfg = load_config(None, ["model.image_size=64", "data.resolution=64", "prompts.num_correction_pt_per_frame=1", *overrides])
    return MicroBatchFlops(cfg, fused_attention=fused_attention, num_scenarios=4)


POINTS = ClipScenario(3, True, [0], frames_to_correct=[0, 1], prompt_kind={0: "click"})
MASK = ClipScenario(3, False, [0], prompt_kind={0: "mask"})


@pytest.mark.slow  # four counted passes, seconds each
def test_cost_is_per_clip_plus_per_object():
    est = estimator()
    one, two, three = (est.forward_backward(POINTS, 3, 64, 64, [n])[0] for n in (1, 2, 3))
    # Exact up to a few parts per million: with one object, PyTorch picks other matmul kernels
    # (mm instead of addmm) for a few layers, whose FLOP formulas round differently.
    assert two > one and three - two == pytest.approx(two - one, rel=1e-5), "objects add the same FLOPs each"
    per_object, per_clip = two - one, 2 * one - two
    assert per_clip > 0
    two_clips = est.forward_backward(POINTS, 3, 64, 64, [2, 1])[0]
    assert two_clips == pytest.approx(2 * per_clip + 3 * per_object, rel=1e-5)


@pytest.mark.slow
def test_scenarios_cost_differently_and_the_estimate_averages_them():
    est = estimator()
    points, mask = (est.forward_backward(s, 3, 64, 64, [2])[0] for s in (POINTS, MASK))
    assert points > mask, "correction clicks rerun the decoder"
    gen = np.random.default_rng(est.seed)
    drawn = [sample_scenario(3, est.cfg.prompts, gen) for _ in range(est.num_scenarios)]
    counts = [est.forward_backward(s, 3, 64, 64, [2])[0] for s in drawn]
    assert len(set(counts)) > 1, "the test needs scenarios of different cost"

    class Clip:  # the shape of a Batch, which is all the estimate reads
        num_frames, num_clips, num_objects = 3, 1, 2
        masks = np.empty((3, 2, 64, 64))

    model_flops, _ = est(Clip)
    assert model_flops == pytest.approx(np.mean(counts), rel=1e-9)


@pytest.mark.slow
def test_recomputation_counts_as_hardware_not_model_flops():
    plain = estimator()
    ckpt = estimator("model.activation_checkpointing=[hiera,memory_attention,heads]")
    fused = estimator(fused_attention=True)
    m_plain, h_plain = plain._count(POINTS, 3, 64, 64, 2)
    m_ckpt, h_ckpt = ckpt._count(POINTS, 3, 64, 64, 2)
    m_fused, h_fused = fused._count(POINTS, 3, 64, 64, 2)
    assert m_plain == h_plain == m_ckpt == m_fused, "model FLOPs do not depend on how the step is run"
    assert h_ckpt > m_ckpt and h_fused > m_fused
    # The forward of the checkpointed regions runs twice: at most one more forward of everything.
    assert h_ckpt < m_ckpt * 4 / 3 + 1
