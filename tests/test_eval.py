import json
import math

import numpy as np
import pytest
import torch

from sam2_scale.config import EvalConfig
from sam2_scale.eval import boundary_f, boundary_map, evaluate_vos, jaccard
from sam2_scale.model import build_sam2
from sam2_scale.prep.davis import DavisSource, find_davis_items
from sam2_scale.prep.shards import plan_shards, run_shards, write_manifest
from sam2_scale.synthetic import write_synthetic_dataset


def square(top, left, side=4, size=16):
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top : top + side, left : left + side] = True
    return mask


# ------------------------------------------------------------------ J and F on hand-made masks


def test_identical_masks_score_one():
    mask = square(2, 2)
    assert jaccard(mask, mask) == 1.0 and boundary_f(mask, mask) == 1.0


def test_disjoint_masks_score_zero():
    pred, gt = square(1, 1), square(10, 10)
    assert jaccard(pred, gt) == 0.0 and boundary_f(pred, gt, bound_th=2) == 0.0


def test_one_pixel_shift_is_within_the_boundary_tolerance():
    pred, gt = square(2, 3), square(2, 2)
    assert jaccard(pred, gt) == pytest.approx(12 / 20)
    assert boundary_f(pred, gt, bound_th=1) == 1.0
    # DAVIS rounds the tolerance up: 0.008 of a 128 x 128 diagonal (1.45) allows 2 pixels.
    assert boundary_f(square(2, 4, size=128), square(2, 2, size=128)) == 1.0


def test_tolerance_in_pixels():
    pred, gt = square(2, 4), square(2, 2)
    assert boundary_f(pred, gt, bound_th=1) < 1.0
    assert boundary_f(pred, gt, bound_th=2) == 1.0


def test_empty_masks():
    empty, mask = torch.zeros(16, 16, dtype=torch.bool), square(2, 2)
    assert jaccard(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    for pred, gt in [(empty, mask), (mask, empty)]:
        assert jaccard(pred, gt) == 0.0 and boundary_f(pred, gt) == 0.0


def test_spurious_blob_costs_precision_only():
    # A 4 x 4 square has 16 boundary pixels, a lone pixel 4 (the 2 x 2 blocks that are not uniform).
    gt = square(2, 2)
    pred = gt.clone()
    pred[12, 12] = True
    assert boundary_map(gt[None]).sum() == 16 and boundary_map(pred[None]).sum() == 20
    precision, recall = 16 / 20, 1.0
    assert boundary_f(pred, gt, bound_th=1) == pytest.approx(2 * precision * recall / (precision + recall))
    assert jaccard(pred, gt) == pytest.approx(16 / 17)


def test_batched_masks_give_one_score_each():
    gt = torch.stack([square(2, 2), square(2, 2), torch.zeros(16, 16, dtype=torch.bool)])
    pred = torch.stack([square(2, 2), square(10, 10), torch.zeros(16, 16, dtype=torch.bool)])
    assert jaccard(pred, gt).tolist() == [1.0, 0.0, 1.0]
    assert boundary_f(pred, gt, bound_th=1).tolist() == [1.0, 0.0, 1.0]
    assert jaccard(gt[0], gt[0]).ndim == 0


def davis_boundary_f(pred, gt, bound_th):
    """DAVIS's f_measure written out pixel by pixel: seg2bmap, disk matching, empty-boundary rules."""

    def seg2bmap(seg):
        h, w = seg.shape
        b = np.zeros_like(seg)
        for y in range(h):
            for x in range(w):
                east = seg[y, x + 1] if x + 1 < w else False
                south = seg[y + 1, x] if y + 1 < h else False
                south_east = seg[y + 1, x + 1] if x + 1 < w and y + 1 < h else False
                if y == h - 1 and x == w - 1:
                    b[y, x] = False
                elif y == h - 1:
                    b[y, x] = seg[y, x] ^ east
                elif x == w - 1:
                    b[y, x] = seg[y, x] ^ south
                else:
                    b[y, x] = (seg[y, x] ^ east) | (seg[y, x] ^ south) | (seg[y, x] ^ south_east)
        return b

    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*pred.shape))
    pred_points, gt_points = np.argwhere(seg2bmap(pred)), np.argwhere(seg2bmap(gt))

    def matched(points, targets):
        if len(targets) == 0:
            return 0
        distances = np.sqrt(((points[:, None, :] - targets[None, :, :]) ** 2).sum(-1))
        return int((distances.min(1) <= radius).sum())

    if len(pred_points) == 0 and len(gt_points) > 0:
        precision, recall = 1.0, 0.0
    elif len(pred_points) > 0 and len(gt_points) == 0:
        precision, recall = 0.0, 1.0
    elif len(pred_points) == 0 and len(gt_points) == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = matched(pred_points, gt_points) / len(pred_points)
        recall = matched(gt_points, pred_points) / len(gt_points)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("bound_th", [0.008, 2, 3])
def test_boundary_f_matches_davis_on_random_blobs(bound_th):
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.normal(size=(12, 1, 6, 8))).float()
    blobs = torch.nn.functional.interpolate(noise, size=(24, 31), mode="bilinear")[:, 0] > 0.4
    blobs[-1] = False  # an empty mask among them
    pred, gt = blobs[:6], blobs[6:]
    expected = [davis_boundary_f(p.numpy(), g.numpy(), bound_th) for p, g in zip(pred, gt)]
    assert boundary_f(pred, gt, bound_th).tolist() == pytest.approx(expected)


# ------------------------------------------------------------------ evaluate_vos on held-out shards


@pytest.fixture(scope="module")
def heldout_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    raw, shards = root / "raw", root / "shards"
    write_synthetic_dataset(raw, num_videos=1, num_images=1, num_heldout=2, num_frames=16, size=(128, 96), seed=0)
    plans = plan_shards(find_davis_items(raw / "davis/JPEGImages", raw / "davis/Annotations"), 1)
    run_shards(plans, shards, DavisSource(), workers=1, progress=False)
    write_manifest(shards, plans, "davis", {})
    return str(shards / "shard-*.tar")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_sam2("tiny", image_size=64)


def test_scores_every_heldout_video_the_same_way_each_time(heldout_shards, tiny_model):
    result = evaluate_vos(tiny_model, EvalConfig(shards=heldout_shards))
    assert set(result) == {"J", "F", "J&F", "num_videos", "num_objects"}
    assert result["num_videos"] == 2 and 2 <= result["num_objects"] <= 6
    assert all(0.0 <= result[k] <= 1.0 for k in ("J", "F", "J&F"))
    assert result["J&F"] == pytest.approx((result["J"] + result["F"]) / 2)
    assert evaluate_vos(tiny_model, EvalConfig(shards=heldout_shards)) == result


def test_every_rank_reads_every_video_and_draws_the_same_clips(heldout_shards, tiny_model, monkeypatch):
    cfg = EvalConfig(shards=heldout_shards, num_frames=3)
    single = evaluate_vos(tiny_model, cfg)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert evaluate_vos(tiny_model, cfg) == single


def test_max_videos_and_training_modes_are_restored(heldout_shards, tiny_model):
    tiny_model.train()
    tiny_model.image_encoder.eval()  # a frozen part stays frozen
    modes = [m.training for m in tiny_model.modules()]
    result = evaluate_vos(tiny_model, EvalConfig(shards=heldout_shards, num_frames=3, max_videos=1))
    assert result["num_videos"] == 1
    assert [m.training for m in tiny_model.modules()] == modes
    tiny_model.eval()
    evaluate_vos(tiny_model, EvalConfig(shards=heldout_shards, num_frames=3, max_videos=1))
    assert not any(m.training for m in tiny_model.modules())


def test_scoring_resolution_other_than_the_model_and_autocast(heldout_shards, tiny_model):
    at_64 = evaluate_vos(tiny_model, EvalConfig(shards=heldout_shards, num_frames=3, max_videos=1))
    cfg = EvalConfig(shards=heldout_shards, num_frames=3, max_videos=1, resolution=96)
    at_96 = evaluate_vos(tiny_model, cfg)
    at_96_bf16 = evaluate_vos(tiny_model, cfg, autocast_dtype=torch.bfloat16)
    assert at_96["num_videos"] == at_96_bf16["num_videos"] == 1
    assert at_96["J&F"] != at_64["J&F"], "the clips were scored at 96 px, not at the model's 64"
    assert at_96_bf16["J&F"] == pytest.approx(at_96["J&F"], abs=0.005), "bf16 autocast scores about what fp32 does"


def test_missing_shards_and_unusable_clips_are_errors(heldout_shards, tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        evaluate_vos(tiny_model, EvalConfig(shards=str(tmp_path / "nothing-here-*.tar")))
    with pytest.raises(RuntimeError, match="2 samples skipped"):
        evaluate_vos(tiny_model, EvalConfig(shards=heldout_shards, num_frames=64))


def _clip_proxy_rank(rank, world, port, shards, result_file):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from sam2_scale.eval import clip_proxy

    predicted, predict = [], clip_proxy._predict_clip
    clip_proxy._predict_clip = lambda *args: predicted.append(1) or predict(*args)  # counts this rank's clips
    torch.manual_seed(0)
    result = evaluate_vos(build_sam2("tiny", image_size=64), EvalConfig(shards=shards, num_frames=3), split=True)
    with open(f"{result_file}.{rank}", "w") as f:
        json.dump({**result, "predicted_here": len(predicted)}, f)
    dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_two_ranks_share_the_clips_and_give_the_scores_of_one(heldout_shards, tiny_model, tmp_path):
    """How the trainer evaluates in its loop: no rank waits for another's whole evaluation."""
    import torch.multiprocessing as mp
    from test_trainer import free_port

    single = evaluate_vos(tiny_model, EvalConfig(shards=heldout_shards, num_frames=3))
    mp.spawn(_clip_proxy_rank, args=(2, free_port(), heldout_shards, str(tmp_path / "r")), nprocs=2, join=True)
    for rank in range(2):
        shared = json.loads((tmp_path / f"r.{rank}").read_text())
        assert shared["num_videos"] == single["num_videos"] == 2 and shared["num_objects"] == single["num_objects"]
        assert shared["predicted_here"] == 1, "each rank tracks its share of the clips"
        for key in ("J", "F", "J&F"):
            assert shared[key] == pytest.approx(single[key], abs=1e-12), key
