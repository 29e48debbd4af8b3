"""The standard semi-supervised VOS scoring protocols, on per-frame J and F.

    davis   DAVIS 2017 val (and SA-V's `sav_benchmark.py` in its DAVIS mode): the first and the
            last annotated frame are not scored; palette outputs (objects do not overlap).
    sav     SA-V val / test (`sav_benchmark.py`): frames as davis; per-object outputs (objects
            may overlap).
    mose    MOSE val: every annotated frame but the first; palette outputs.

In all three, an object is scored from the first scored frame on which it appears in the ground
truth or in the prediction (earlier frames, empty in both, do not count), and only objects that
appear in the ground truth of some scored frame are scored at all. J and F of an object are the
means over its scored frames; the published J, F and J&F are the means over all (video, object)
pairs, x 100.
"""

from dataclasses import dataclass

import numpy as np

from .jf import boundary_f, jaccard


@dataclass(frozen=True)
class Protocol:
    name: str
    skip_last: bool  # the last annotated frame is not scored (the first never is)
    non_overlap: bool  # palette outputs: one object per pixel


PROTOCOLS = {
    "davis": Protocol("davis", skip_last=True, non_overlap=True),
    "sav": Protocol("sav", skip_last=True, non_overlap=False),
    "mose": Protocol("mose", skip_last=False, non_overlap=True),
}


@dataclass
class FrameScores:
    """J and F of every object of a video on one annotated frame, and where it appears."""

    j: np.ndarray  # (objects,)
    f: np.ndarray
    in_gt: np.ndarray  # bool (objects,)
    in_pred: np.ndarray


def score_frame(pred, gt):
    """FrameScores of bool (objects, H, W) predictions against the ground truth."""
    return FrameScores(
        j=jaccard(pred, gt).double().cpu().numpy(),
        f=boundary_f(pred, gt).double().cpu().numpy(),
        in_gt=gt.flatten(1).any(1).cpu().numpy(),
        in_pred=pred.flatten(1).any(1).cpu().numpy(),
    )


def object_scores(frames, protocol: Protocol):
    """{object index: (J, F) x 100} of a video from its annotated frames' FrameScores, in order."""
    scored = frames[1:-1] if protocol.skip_last else frames[1:]
    if not scored:
        return {}
    j = np.stack([s.j for s in scored])  # (frames, objects)
    f = np.stack([s.f for s in scored])
    in_gt = np.stack([s.in_gt for s in scored])
    appeared = np.logical_or.accumulate(in_gt | np.stack([s.in_pred for s in scored]), axis=0)
    out = {}
    for k in np.flatnonzero(in_gt.any(0)):
        counted = appeared[:, k]
        out[int(k)] = (float(100 * j[counted, k].mean()), float(100 * f[counted, k].mean()))
    return out


def summarize(rows):
    """Overall J, F, J&F (x 100) of rows {"J": .., "F": ..}, one per (video, object)."""
    if not rows:
        return {"J": float("nan"), "F": float("nan"), "J&F": float("nan"), "num_objects": 0}
    j = float(np.mean([r["J"] for r in rows]))
    f = float(np.mean([r["F"] for r in rows]))
    return {"J": j, "F": f, "J&F": (j + f) / 2, "num_objects": len(rows)}
