"""Forward + backward of SAM 2.1 on a short clip, with and without activation checkpointing.

Each configuration runs in its own process so that peak memory (max RSS) is its own. Besides
RSS, the bytes autograd keeps for backward outside checkpointed regions are counted exactly.
Results are ratios against the no-checkpointing baseline measured in the same run.

    python benchmarks/model_step.py                       # tiny and base_plus at 512, CPU
    python benchmarks/model_step.py --sizes base_plus --image-size 1024 --dtype bf16 --device cuda
    python benchmarks/model_step.py --write BENCHMARKS.md # append the table
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from report import add_run  # benchmarks/report.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def one_config(args):
    """Runs in a child process; prints one JSON line."""
    import torch

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from tracking_driver import run_clip, synthetic_clip

    from sam2_scale.model import build_sam2

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_sam2(args.size, image_size=args.image_size, activation_checkpointing=args.ckpt).to(device).train()
    frames, masks = synthetic_clip(args.frames, args.objects, args.image_size)
    frames, masks = frames.to(device), masks.to(device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    def step(count_saved=False):
        model.zero_grad(set_to_none=True)
        saved[0] = 0
        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if count_saved else _null()
        with hooks, torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            outs = run_clip(model, frames, masks)
            loss = sum(o["pred_masks_high_res"].float().sigmoid().mean() for o in outs)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step(count_saved=True)  # warm-up, and the saved-activation count
    saved_bytes = saved[0]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    result = {
        "size": args.size,
        "ckpt": args.ckpt,
        "seconds": sorted(times)[len(times) // 2],
        "saved_activation_mb": saved_bytes / 2**20,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base_plus"], help="model sizes to measure")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=3, help="clip length (frame 0 mask prompt, 1 click, 2 box, rest tracked)")
    parser.add_argument("--objects", type=int, default=2, help="objects per clip")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (median reported)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", metavar="FILE", help="append the results table to FILE (e.g. BENCHMARKS.md)")
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        return one_config(args)

    rows = []
    for size in args.sizes:
        for ckpt in (False, True):
            cmd = [
                sys.executable,
                __file__,
                "--_child",
                "--size",
                size,
                "--image-size",
                str(args.image_size),
                "--frames",
                str(args.frames),
                "--objects",
                str(args.objects),
                "--iters",
                str(args.iters),
                "--dtype",
                args.dtype,
                "--device",
                args.device,
            ]
            if ckpt:
                cmd.append("--ckpt")
            print(f"measuring {size} ckpt={ckpt} ...", file=sys.stderr, flush=True)
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ}).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {_torch_version()}"
    header = (
        f"### Model forward+backward, {args.image_size}², {args.frames} frames × {args.objects} objects, "
        f"{args.dtype}, {args.device} — {datetime.date.today().isoformat()} ({machine})\n\n"
        "| size | act. ckpt | s / step | × baseline | saved activations MB | × baseline | max RSS MB | × baseline |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in rows:
        base = next(r for r in rows if r["size"] == row["size"] and not r["ckpt"])
        lines.append(
            f"| {row['size']} | {'on' if row['ckpt'] else 'off'} | {row['seconds']:.2f} | {row['seconds'] / base['seconds']:.2f} "
            f"| {row['saved_activation_mb']:.0f} | {row['saved_activation_mb'] / base['saved_activation_mb']:.2f} "
            f"| {row['max_rss_mb']:.0f} | {row['max_rss_mb'] / base['max_rss_mb']:.2f} |"
        )
    table = header + "\n".join(lines) + "\n"
    print(table)
    if args.write:
        add_run(args.write, "## Activation checkpointing (model, `benchmarks/model_step.py`)", table)


def _torch_version():
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()
