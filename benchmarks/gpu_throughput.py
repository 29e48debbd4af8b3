"""Training throughput of the real engines: clips/s, frames/s, MFU and peak memory for each model
size, with and without activation checkpointing, under ddp, fsdp and deepspeed (ZeRO-2).

The full setting is the recipe's: 1024², 8-frame clips, 3 objects, simulated prompts with
correction clicks, bf16. Each configuration runs in its own `torchrun` (one process per device,
so peak memory is its own); ratios are against ddp without checkpointing of the same size.

    python benchmarks/gpu_throughput.py                         # all sizes, every GPU of the machine
    python benchmarks/gpu_throughput.py --sizes base_plus --write BENCHMARKS.md
    python benchmarks/gpu_throughput.py --toy                   # CPU smoke test: tiny, 128², 2 frames
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from report import add_run  # benchmarks/report.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Training throughput (`benchmarks/gpu_throughput.py`)"


def worker(args):
    """One configuration, inside torchrun; rank 0 prints one JSON line."""
    import torch

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from tracking_driver import synthetic_clip

    from sam2_scale.config import load_config
    from sam2_scale.data import Batch
    from sam2_scale.model import build_sam2
    from sam2_scale.train.distributed import init_distributed
    from sam2_scale.train.engine import build_engine
    from sam2_scale.train.metrics import count_flops, peak_flops, peak_memory_bytes

    info = init_distributed()
    torch.set_flush_denormal(True)  # as the trainer does on CPU
    cfg = load_config(
        None,
        [
            f"train.strategy={args.strategy}",
            f"train.precision={args.precision}",
            f"train.deepspeed_config={ROOT / 'ds_configs/zero2.json'}",
            f"model.activation_checkpointing={str(args.ckpt).lower()}",
        ],
    )
    torch.manual_seed(0)
    model = build_sam2(args.size, image_size=args.image_size, drop_path_rate=0.1, activation_checkpointing=args.ckpt)
    engine = build_engine(model.to(info.device).train(), cfg, info)
    frames, masks = synthetic_clip(args.frames, args.objects, args.image_size, seed=info.rank)
    batch = Batch.from_clip(frames, masks[:, :, 0]).to(info.device)
    gen = torch.Generator(device=info.device).manual_seed(0)

    def sync():
        if info.device.type == "cuda":
            torch.cuda.synchronize()

    _, flops = count_flops(lambda: engine.train_micro_batch(batch, gen, True))
    engine.step()
    for _ in range(args.warmup - 1):
        engine.train_micro_batch(batch, gen, True)
        engine.step()
    if info.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(info.device)
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        engine.train_micro_batch(batch, gen, True)
        engine.step()
    sync()
    elapsed = (time.perf_counter() - start) / args.steps
    peak = peak_flops(info.device)
    if info.is_main:
        result = {
            "clips_per_s": info.world_size / elapsed,
            "frames_per_s": info.world_size * args.frames / elapsed,
            "step_s": elapsed,
            "mfu": flops / elapsed / peak if peak else None,
            "tflops_per_step": flops / 1e12,
            "peak_gib": peak_memory_bytes(info.device) / 2**30,
            "device": torch.cuda.get_device_name(info.device) if info.device.type == "cuda" else platform.processor() or "cpu",
            "world": info.world_size,
        }
        print("RESULT " + json.dumps(result), flush=True)
    torch.distributed.destroy_process_group()


def run_config(args, size, strategy, ckpt):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={args.nproc}",
        __file__,
        "--worker",
        f"--size={size}",
        f"--strategy={strategy}",
        f"--precision={args.precision}",
        f"--image-size={args.image_size}",
        f"--frames={args.frames}",
        f"--objects={args.objects}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
    ] + (["--ckpt"] if ckpt else [])
    env = dict(os.environ, DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", "cpu" if args.nproc and args.toy else ""))
    if not env["DS_ACCELERATOR"]:
        env.pop("DS_ACCELERATOR")
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=args.config_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.config_timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    lines = (proc.stdout + proc.stderr).splitlines()
    # The worker's exception, not torchrun's summary that follows it.
    raised = [line for line in lines if line and not line[0].isspace() and ("Error" in line or "Exception" in line)]
    return {"error": raised[-1] if raised else lines[-1] if lines else f"exit {proc.returncode}", "output": "\n".join(lines)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy", action="store_true", help="tiny model, 128², 2 frames, 2 objects, fp32: runs on a CPU")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "base_plus", "large"])
    parser.add_argument("--strategies", nargs="+", default=["ddp", "fsdp", "deepspeed"])
    parser.add_argument("--nproc", type=int, default=0, help="processes (default: GPUs on this machine, or 2 on CPU)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first, the first one counting FLOPs")
    parser.add_argument(
        "--act-ckpt",
        dest="ckpt_modes",
        nargs="+",
        choices=("off", "on"),
        default=["off", "on"],
        help="activation checkpointing settings to run (default: off on)",
    )
    parser.add_argument("--time-limit", type=float, default=0, help="start no configuration after this many seconds (0: none)")
    parser.add_argument("--config-timeout", type=float, default=900, help="seconds one configuration may take (default 900)")
    parser.add_argument("--write", help="append the results to this Markdown file (BENCHMARKS.md)")
    # One configuration (set by the parent).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--objects", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import torch

    if args.toy:
        args.sizes, args.image_size, args.frames, args.objects, args.precision = ["tiny"], 128, 2, 2, "fp32"
        args.steps, args.warmup = min(args.steps, 3), min(args.warmup, 2)
    args.nproc = args.nproc or (torch.cuda.device_count() or 2)
    rows, start, device = [], time.time(), "?"
    for size in args.sizes:
        baseline = None
        for strategy in args.strategies:
            for ckpt in (mode == "on" for mode in args.ckpt_modes):
                if args.time_limit and time.time() - start > args.time_limit:
                    rows.append(f"| {size} | {strategy} | {'on' if ckpt else 'off'} | not run (--time-limit) | | | | | |")
                    continue
                r = run_config(args, size, strategy, ckpt)
                if "error" in r:
                    print(f"{size} {strategy} ckpt={ckpt}: FAILED\n{r.get('output', r['error'])}", file=sys.stderr)
                    reason = r["error"][:80].replace("|", "/")
                    rows.append(f"| {size} | {strategy} | {'on' if ckpt else 'off'} | failed: {reason} | | | | | |")
                    continue
                if baseline is None and strategy == "ddp" and not ckpt:
                    baseline = r
                ratio = r["clips_per_s"] / baseline["clips_per_s"] if baseline else float("nan")
                mem_ratio = r["peak_gib"] / baseline["peak_gib"] if baseline else float("nan")
                mfu = f"{r['mfu']:.3f}" if r["mfu"] is not None else "n/a"
                row = (
                    f"| {size} | {strategy} | {'on' if ckpt else 'off'} | {r['clips_per_s']:.3f} | {r['frames_per_s']:.2f} | "
                    f"{mfu} | {r['peak_gib']:.2f} | {ratio:.2f}× | {mem_ratio:.2f}× |"
                )
                print(row, flush=True)
                rows.append(row)
                device = r["device"]
    title = (
        f"### {args.image_size}², {args.frames} frames × {args.objects} objects, {args.precision}, {args.nproc} process(es) "
        f"on {device} — {datetime.date.today().isoformat()} (torch {torch.__version__})"
    )
    table = "\n".join(
        [
            title,
            "",
            "| size | strategy | act. ckpt | clips/s | frames/s | MFU | peak GiB per process | clips/s vs ddp | memory vs ddp |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if args.write:
        add_run(args.write, HEADING, table)


if __name__ == "__main__":
    main()
