"""Prompt simulation: clicks, boxes and scenarios."""

from collections import Counter

import numpy as np
import torch

from sam2_scale.config import PromptConfig
from sam2_scale.objective.prompts import (
    PixelNoise,
    mask_to_box,
    micro_batch_seeds,
    sample_box_prompt,
    sample_click_from_error,
    sample_scenario,
)


def gen(seed=0):
    return np.random.default_rng(seed)


def noise(seed, num_objects):
    return PixelNoise(seed, [num_objects], "cpu")


def random_masks(b, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, h, w, generator=g) > 0.6


def test_clicks_land_in_the_error_region_with_the_right_label():
    g = noise(1, 4)
    for seed in range(20):
        gt, pred = random_masks(4, 9, 7, seed), random_masks(4, 9, 7, seed + 100)
        points, labels = sample_click_from_error(gt, pred, g)
        assert points.shape == (4, 1, 2) and labels.shape == (4, 1) and labels.dtype == torch.int32
        for i in range(4):
            x, y = int(points[i, 0, 0]), int(points[i, 0, 1])
            assert gt[i, 0, y, x] != pred[i, 0, y, x], "the click must be on an error pixel"
            assert labels[i, 0].item() == int(gt[i, 0, y, x]), "false negative -> positive, false positive -> negative"


def test_clicks_are_uniform_over_the_error_region():
    gt = torch.zeros(1, 1, 1, 4, dtype=torch.bool)
    gt[..., :3] = True
    pred = torch.zeros_like(gt)
    pred[..., 0] = True  # errors: pixels 1, 2 (missed) and none else
    g = noise(2, 1)
    counts = Counter(int(sample_click_from_error(gt, pred, g)[0][0, 0, 0]) for _ in range(600))
    assert set(counts) == {1, 2}
    assert abs(counts[1] - counts[2]) < 100


def test_no_prediction_clicks_inside_gt_and_perfect_prediction_clicks_background():
    gt = random_masks(3, 8, 8, 5)
    gt[:, :, 0, 0] = True
    gt[:, :, 7, 7] = False
    points, labels = sample_click_from_error(gt, None, noise(3, 3))
    for i in range(3):
        x, y = int(points[i, 0, 0]), int(points[i, 0, 1])
        assert gt[i, 0, y, x] and labels[i, 0] == 1
    points, labels = sample_click_from_error(gt, gt.clone(), noise(3, 3))
    for i in range(3):
        x, y = int(points[i, 0, 0]), int(points[i, 0, 1])
        assert not gt[i, 0, y, x] and labels[i, 0] == 0


def test_mask_to_box_and_jittered_box_bounds():
    masks = torch.zeros(2, 1, 50, 60, dtype=torch.bool)
    masks[0, 0, 10:20, 5:45] = True
    masks[1, 0, 0:50, 30:31] = True
    assert mask_to_box(masks).tolist() == [[5, 10, 44, 19], [30, 0, 30, 49]]
    g = noise(4, 2)
    for _ in range(50):
        corners, labels = sample_box_prompt(masks, g, box_noise=0.1, noise_bound=20)
        assert labels.tolist() == [[2, 3], [2, 3]]
        box = corners.reshape(2, 4)
        # Object 0: width 39 -> |dx| <= 3.9; height 9 -> |dy| <= 0.9.
        assert (box[0] - torch.tensor([5.0, 10.0, 44.0, 19.0])).abs().le(torch.tensor([3.9, 0.9, 3.9, 0.9]) + 1e-5).all()
        # Clamped into the image.
        assert box[:, 0::2].min() >= 0 and box[:, 0::2].max() <= 59 and box[:, 1::2].max() <= 49


def test_scenario_probabilities_and_structure():
    cfg = PromptConfig()
    g = gen(6)
    kinds, inits, corrects, from_gt = Counter(), Counter(), Counter(), []
    for _ in range(2000):
        s = sample_scenario(8, cfg, g)
        assert s.init_cond_frames[0] == 0 and len(set(s.init_cond_frames)) == len(s.init_cond_frames)
        kinds[s.prompt_kind[0]] += 1
        inits[len(s.init_cond_frames)] += 1
        if s.use_pt_input:
            assert s.frames_to_correct[: len(s.init_cond_frames)] == s.init_cond_frames
            assert len(s.init_cond_frames) <= len(s.frames_to_correct) <= 2
            corrects[len(s.frames_to_correct)] += 1
            assert sorted(s.click_from_gt) == sorted(s.frames_to_correct)
            for flags in s.click_from_gt.values():
                assert len(flags) == cfg.num_correction_pt_per_frame
                from_gt.extend(flags)
        else:
            assert s.frames_to_correct == []
        order = s.processing_order
        assert sorted(order) == list(range(8)) and order[: len(s.init_cond_frames)] == s.init_cond_frames
    # mask 0.5, click 0.25, box 0.25; 1 or 2 initial frames equally often.
    assert abs(kinds["mask"] / 2000 - 0.5) < 0.04
    assert abs(kinds["click"] / 2000 - 0.25) < 0.04 and abs(kinds["box"] / 2000 - 0.25) < 0.04
    assert abs(inits[1] / 2000 - 0.5) < 0.04
    assert corrects[1] > 0 and corrects[2] > 0
    # 10 % of correction clicks are sampled as if nothing had been predicted.
    assert abs(np.mean(from_gt) - cfg.prob_to_sample_from_gt) < 0.02


def test_single_frame_is_image_training():
    g = gen(7)
    for _ in range(50):
        s = sample_scenario(1, PromptConfig(), g)
        assert s.use_pt_input and s.init_cond_frames == [0] and s.frames_to_correct == [0]


def test_same_seed_same_scenarios():
    a = [sample_scenario(8, PromptConfig(), g) for g in [gen(9)] for _ in range(20)]
    b = [sample_scenario(8, PromptConfig(), g) for g in [gen(9)] for _ in range(20)]
    assert a == b


def test_micro_batch_seeds_share_the_scenario_and_not_the_pixels():
    a0, p0 = micro_batch_seeds(0, 7, rank=0)
    a1, p1 = micro_batch_seeds(0, 7, rank=1)
    assert a0 == a1 and p0 != p1
    assert micro_batch_seeds(0, 8, rank=0)[0] != a0 and micro_batch_seeds(1, 7, rank=0)[0] != a0
    assert micro_batch_seeds(0, 7, rank=0) == (a0, p0), "derived, so a resumed run draws the same"


def test_pixel_noise_of_a_clip_does_not_depend_on_its_batch_mates():
    alone = PixelNoise(5, [2], "cpu").uniform(3)
    together = PixelNoise(5, [2, 4], "cpu").uniform(3)
    assert together.shape == (6, 3)
    assert torch.equal(together[:2], alone)
    second = PixelNoise(5, [0, 4], "cpu").uniform(3)
    assert torch.equal(together[2:], second), "clip 1 draws from its own generator, whatever clip 0 holds"
    assert not torch.equal(together[2:4], alone)
