"""Host-device synchronisations and dispatched kernels of one training micro-batch, counted on a
CPU, for this tree and for a baseline commit in the same run.

A GPU step of SAM 2.1 is latency-bound: every synchronisation stops the host from queueing
ahead, and every kernel costs a launch whatever its size. Both are properties of the code, not
of the machine, so they are counted here by a dispatch mode (`sam2_scale.train.sync_check`, or
the same rules inlined for a baseline that predates it): value reads, tensors built from Python
data, data-dependent output sizes, device-to-host copies, `.tolist()`; kernels are dispatched
operators that are not views.

Workload: tiny (the op count barely depends on size; `--sizes` adds others), one 8-frame clip
× 3 objects, forward (prompt simulation, unroll, loss) + backward, fp32, in two scenarios with
the same structure in both versions: point prompts (a click on frame 0, corrections on frames
0 and 4, 7 clicks each) and a mask prompt on frame 0.

    python benchmarks/step_dispatch.py --baseline 0045972 --write BENCHMARKS.md
"""

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from report import add_run  # benchmarks/report.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Host syncs and kernels per micro-batch (`benchmarks/step_dispatch.py`)"

# Runs inside a child process whose sys.path starts with the tree to measure (this one or a
# baseline checkout): self-contained, and written for both the current and the original API.
DRIVER = r"""
import collections, inspect, json, sys
import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
sys.path.insert(0, sys.argv[1] + "/tests")
from tracking_driver import synthetic_clip
from sam2_scale.data.batch import Batch
from sam2_scale.model import build_sam2
from sam2_scale.config import PromptConfig
from sam2_scale.objective import MultiStepLoss, sample_scenario, unroll_clip

aten = torch.ops.aten
READS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
         aten.lift_fresh.default, aten.lift_fresh_copy.default, aten._unique2.default}
VIEWS = {"view", "_unsafe_view", "reshape", "t", "transpose", "permute", "unsqueeze", "squeeze", "expand", "slice",
         "select", "detach", "alias", "as_strided", "unbind", "split", "split_with_sizes", "unflatten",
         "view_as_real", "view_as_complex", "_reshape_alias"}

class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__(); self.ops = collections.Counter(); self.syncs = collections.Counter()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        if func in READS:
            self.syncs[func.overloadpacket.__name__] += 1
        if func in (aten.index.Tensor,) and any(getattr(i, "dtype", None) == torch.bool for i in args[1] if i is not None):
            self.syncs["bool_index"] += 1
        return func(*args, **(kwargs or {}))

class Lists(TorchFunctionMode):
    def __init__(self, count):
        super().__init__(); self.count = count
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.tolist, torch.Tensor.numpy):
            self.count.syncs[func.__name__] += 1
        return func(*args, **(kwargs or {}))

size, image_size = sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
model = build_sam2(size, image_size=image_size).train()
frames, masks = synthetic_clip(8, 3, image_size)
batch = Batch.from_clip(frames, masks[:, :, 0])
cfg = PromptConfig()
new_api = "scenario" in inspect.signature(unroll_clip).parameters
WANT = {"points": dict(use_pt_input=True, init_cond_frames=[0], frames_to_correct=[0, 4], prompt_kind={0: "click"}),
        "mask": dict(use_pt_input=False, init_cond_frames=[0], frames_to_correct=[], prompt_kind={0: "mask"})}

def run(kind):
    want = WANT[kind]
    if new_api:
        from sam2_scale.objective.prompts import ClipScenario, PixelNoise
        scenario = ClipScenario(8, **want)
        if want["frames_to_correct"]:
            scenario.click_from_gt = {t: [False] * cfg.num_correction_pt_per_frame for t in want["frames_to_correct"]}
        return lambda: unroll_clip(model, batch, scenario, PixelNoise(0, batch.objects_per_clip, "cpu"), cfg)
    for seed in range(100_000):  # the original API draws the scenario itself: find a seed that gives it
        s = sample_scenario(8, cfg, torch.Generator().manual_seed(seed))
        if all(getattr(s, k) == v for k, v in want.items()):
            return lambda: unroll_clip(model, batch, torch.Generator().manual_seed(seed), cfg)[0]
    raise SystemExit(f"no seed gives the {kind} scenario")

result = {}
for kind in WANT:
    unroll = run(kind)
    MultiStepLoss()(unroll(), batch.masks)["core_loss"].backward()  # warm-up: per-device constants
    model.zero_grad(set_to_none=True)
    count = Count()
    with Lists(count), count:
        MultiStepLoss()(unroll(), batch.masks)["core_loss"].backward()
    result[kind] = {"syncs": sum(count.syncs.values()), "sync_kinds": dict(count.syncs),
                    "kernels": sum(n for k, n in count.ops.items() if k not in VIEWS), "ops": sum(count.ops.values())}
print("RESULT " + json.dumps(result))
"""


def measure(tree, size, image_size):
    driver = Path(tempfile.mkdtemp()) / "driver.py"
    driver.write_text(DRIVER)
    cmd = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tree)!r}); exec(open({str(driver)!r}).read())"]
    proc = subprocess.run([*cmd, str(tree), size, str(image_size)], capture_output=True, text=True, cwd=tree)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise SystemExit(f"measuring {tree} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def baseline_tree(commit):
    folder = Path(tempfile.mkdtemp()) / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), commit], check=True, capture_output=True)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="git commit to count as well, in the same run (e.g. 0045972)")
    parser.add_argument("--sizes", nargs="+", default=["tiny"])
    parser.add_argument("--image-size", type=int, default=128, help="the op count does not depend on it (default 128)")
    parser.add_argument("--write", help="append the results to this Markdown file (BENCHMARKS.md)")
    args = parser.parse_args()
    import torch

    trees = {"this tree": ROOT}
    if args.baseline:
        trees = {f"baseline {args.baseline}": baseline_tree(args.baseline), **trees}
    rows, results = [], {}
    try:
        for size in args.sizes:
            for label, tree in trees.items():
                results[(size, label)] = r = measure(tree, size, args.image_size)
                base = results.get((size, f"baseline {args.baseline}"))
                for kind in ("points", "mask"):
                    ratio = f"{r[kind]['kernels'] / base[kind]['kernels']:.2f}×" if base else ""
                    kinds = ", ".join(f"{k} {n}" for k, n in sorted(r[kind]["sync_kinds"].items())) or "none"
                    rows.append(f"| {size} | {label} | {kind} | {r[kind]['syncs']} ({kinds}) | {r[kind]['kernels']} | {ratio} |")
                    print(rows[-1], flush=True)
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees[f"baseline {args.baseline}"])])
    title = (
        f"### 8-frame clip × 3 objects, {args.image_size}², fp32, forward + backward, cpu — "
        f"{datetime.date.today().isoformat()} ({platform.machine()}, torch {torch.__version__})"
    )
    table = "\n".join(
        [
            title,
            "",
            "| size | code | scenario | host syncs per micro-batch | kernels (non-view ops) | kernels vs baseline |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if args.write:
        add_run(args.write, HEADING, table)


if __name__ == "__main__":
    main()
