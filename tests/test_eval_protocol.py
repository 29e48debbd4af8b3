"""The protocols' rules (which frames, which objects, from when) against an independent,
frame-by-frame implementation of SA-V's `sav_benchmark.py` / DAVIS evaluation written out
here, on hand-made and random label maps."""

import numpy as np
import pytest
import torch
from test_eval import davis_boundary_f

from sam2_scale.eval.protocol import PROTOCOLS, object_scores, score_frame, summarize


def reference_scores(gt_frames, pred_frames, skip_last):
    """{object id: (J, F) x 100} the way the benchmark scripts compute them: frames fed in order,
    every object seen so far in the ground truth or the prediction is scored on each frame, and
    only objects seen in the ground truth are reported."""
    gt_frames, pred_frames = gt_frames[1:], pred_frames[1:]
    if skip_last:
        gt_frames, pred_frames = gt_frames[:-1], pred_frames[:-1]
    in_gt, in_pred = set(), set()
    j, f = {}, {}
    for gt, pred in zip(gt_frames, pred_frames):
        in_gt |= {int(v) for v in np.unique(gt) if v}
        in_pred |= {int(v) for v in np.unique(pred) if v}
        for obj in in_gt | in_pred:
            g, p = gt == obj, pred == obj
            union = (g | p).sum()
            j.setdefault(obj, []).append(1.0 if union == 0 else (g & p).sum() / union)
            f.setdefault(obj, []).append(davis_boundary_f(p, g, 0.008))
    return {obj: (100 * np.mean(j[obj]), 100 * np.mean(f[obj])) for obj in in_gt}


def our_scores(gt_frames, pred_frames, object_ids, protocol):
    ids = np.array(object_ids)[:, None, None]
    frames = [
        score_frame(torch.from_numpy(pred[None] == ids), torch.from_numpy(gt[None] == ids))
        for gt, pred in zip(gt_frames, pred_frames)
    ]
    return {object_ids[k]: v for k, v in object_scores(frames, PROTOCOLS[protocol]).items()}


def box(labels, obj, top, left, h=4, w=5):
    labels[top : top + h, left : left + w] = obj
    return labels


def frames_of(n, size=(16, 20)):
    return [np.zeros(size, np.uint8) for _ in range(n)]


def assert_scores(ours, ref):
    assert set(ours) == set(ref)
    for obj in ref:
        assert ours[obj] == pytest.approx(ref[obj]), obj


def test_first_and_last_frames_are_not_scored_except_last_under_mose():
    gt, pred = frames_of(4), frames_of(4)
    for t in range(4):
        box(gt[t], 1, 3, 3 + t)
        box(pred[t], 1, 3, 3 + t if t in (1, 2) else 12)  # wrong on the first and last frames
    for protocol in ("davis", "sav"):
        assert our_scores(gt, pred, [1], protocol) == {1: (100.0, 100.0)}
        assert_scores(our_scores(gt, pred, [1], protocol), reference_scores(gt, pred, skip_last=True))
    mose = our_scores(gt, pred, [1], "mose")
    assert mose[1][0] == pytest.approx(100 * 2 / 3)  # frames 1, 2 perfect, frame 3 disjoint
    assert_scores(mose, reference_scores(gt, pred, skip_last=False))


def test_a_late_object_counts_from_its_first_appearance_in_gt_or_prediction():
    gt, pred = frames_of(7), frames_of(7)
    for t in range(7):
        box(gt[t], 1, 2, 2)
        box(pred[t], 1, 2, 2)
        if t >= 4:
            box(gt[t], 2, 9, 9)
            box(pred[t], 2, 9, 9)
    late = our_scores(gt, pred, [1, 2], "sav")
    assert late == {1: (100.0, 100.0), 2: (100.0, 100.0)}  # empty/empty frames 1..3 not counted
    # Predicted before it appears: counted from frame 2 on (J 0 there, then empty/empty 1 on
    # frame 3, 1 on frames 4 and 5).
    box(pred[2], 2, 9, 14)
    early = our_scores(gt, pred, [1, 2], "sav")
    assert early[2][0] == pytest.approx(100 * 3 / 4)
    assert_scores(early, reference_scores(gt, pred, skip_last=True))


def test_objects_only_predicted_or_only_in_unscored_frames_are_not_scored():
    gt, pred = frames_of(5), frames_of(5)
    box(gt[0], 3, 1, 1)  # object 3 only on the first frame: never scored
    for t in range(5):
        box(gt[t], 1, 8, 8)
        box(pred[t], 1, 8, 9)
        box(pred[t], 2, 1, 12)  # hallucinated: never in the ground truth
    ours = our_scores(gt, pred, [1, 2, 3], "davis")
    assert set(ours) == {1}
    assert_scores(ours, reference_scores(gt, pred, skip_last=True))


def test_empty_videos_and_too_short_videos_score_nothing():
    gt, pred = frames_of(6), frames_of(6)
    assert our_scores(gt, pred, [1], "davis") == {} == reference_scores(gt, pred, skip_last=True)
    gt2, pred2 = frames_of(2), frames_of(2)
    box(gt2[1], 1, 2, 2)
    assert our_scores(gt2, pred2, [1], "sav") == {}  # two frames: the first and the last
    assert summarize([])["num_objects"] == 0 and np.isnan(summarize([])["J&F"])


@pytest.mark.parametrize("seed", range(4))
def test_random_appearances_match_the_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 9))
    gt, pred = frames_of(n), frames_of(n)
    for obj in (1, 2, 3):
        appear, vanish = sorted(rng.integers(0, n + 1, 2))
        for t in range(n):
            if appear <= t < vanish:
                top, left = rng.integers(0, 10, 2)
                box(gt[t], obj, top, left)
            if rng.random() < 0.6:  # the prediction: near, off, or missing
                top, left = rng.integers(0, 10, 2)
                box(pred[t], obj, top, left)
    for protocol, skip_last in (("sav", True), ("davis", True), ("mose", False)):
        assert_scores(our_scores(gt, pred, [1, 2, 3], protocol), reference_scores(gt, pred, skip_last))


def test_overall_scores_average_every_video_object_pair():
    rows = [{"J": 50.0, "F": 70.0}, {"J": 100.0, "F": 90.0}, {"J": 0.0, "F": 20.0}]
    assert summarize(rows) == {"J": 50.0, "F": 60.0, "J&F": 55.0, "num_objects": 3}
