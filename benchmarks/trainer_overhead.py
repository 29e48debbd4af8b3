"""What the trainer costs on top of the bare computation, and what activation checkpointing saves.

The baseline is a bare loop in one process: batches from the same input pipeline, the same
clip unroll and loss, backward, clipping, AdamW step. Then `python -m sam2_scale.train` runs the
same steps (same seeds, so the same weights, data and prompts) as a single process under each
strategy, with W&B offline, metrics, grad norms per module and the preemption poll on, and once
more with activation checkpointing. Every configuration is its own process (peak RSS is its
own). Step time is the mean over the steps after the first `--warmup`.

    python benchmarks/trainer_overhead.py
    python benchmarks/trainer_overhead.py --write BENCHMARKS.md
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from report import add_run  # benchmarks/report.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Trainer overhead (`benchmarks/trainer_overhead.py`)"


def make_shards(root):
    sys.path.insert(0, str(ROOT))
    from sam2_scale.prep.sav import SavSource, find_sav_items
    from sam2_scale.prep.shards import plan_shards, run_shards, write_manifest
    from sam2_scale.synthetic import write_synthetic_dataset

    write_synthetic_dataset(root / "raw", num_videos=6, num_images=1, num_heldout=0, num_frames=24, size=(320, 256), seed=0)
    plans = plan_shards(find_sav_items(root / "raw/sav/videos", root / "raw/sav/annotations"), 1)
    run_shards(plans, root / "sav", SavSource(), workers=2, progress=False)
    write_manifest(root / "sav", plans, "sav", {})


def config(root, args, out_dir, **train):
    cfg = {
        "model": {"size": "tiny", "image_size": args.image_size, "drop_path_rate": 0.1},
        "optim": {"base_lr": 1e-4, "vision_lr": 1e-4, "total_steps": args.steps, "warmup_steps": 2},
        "data": {
            "resolution": args.image_size,
            "num_workers": 1,
            "shuffle_buffer": 4,
            "datasets": [
                {
                    "name": "sav",
                    "shards": str(root / "sav/shard-*.tar"),
                    "kind": "video",
                    "batch_size": 1,
                    "num_frames": args.frames,
                }
            ],
        },
        # One log line per `warmup` steps: the first window is the warm-up.
        "train": {"out_dir": str(out_dir), "precision": "fp32", "log_every": args.warmup, **train},
        "checkpoint": {"every": 0},
        "wandb": {"mode": "offline"},
    }
    path = out_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def bare_loop(config_path, warmup):
    """The baseline, in a child process: prints the mean step time after warmup and the peak RSS."""
    import torch

    sys.path.insert(0, str(ROOT))
    from sam2_scale.config import load_config
    from sam2_scale.data.mixing import MixedLoader
    from sam2_scale.model import build_sam2
    from sam2_scale.train.engine import TrainingStep
    from sam2_scale.train.optim import LRScheduler, build_optimizer

    cfg = load_config(config_path)
    torch.set_flush_denormal(True)  # as the trainer does on CPU
    torch.manual_seed(cfg.train.seed)
    model = build_sam2("tiny", image_size=cfg.model.image_size, drop_path_rate=cfg.model.drop_path_rate).train()
    torch.manual_seed(cfg.train.seed + 1)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = LRScheduler(optimizer, cfg.optim)
    forward = TrainingStep(model, cfg, rank=0)  # prompts, unroll and loss, as the trainer's engines run them
    times = []
    data = iter(MixedLoader(cfg.data, steps_per_epoch=cfg.train.steps_per_epoch))
    for step in range(cfg.optim.total_steps):
        start = time.perf_counter()
        batch = next(data)
        forward(batch, step)["core_loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    step_s = sum(times[warmup:]) / len(times[warmup:])
    print("RESULT " + json.dumps({"step_s": step_s, "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def run(cmd, env):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def trainer_run(config_path, out_dir, env):
    run([sys.executable, "-m", "sam2_scale.train", "--config", str(config_path), "--resume", "none"], env)
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if "time/step_s" in r][1:]
    return {"step_s": sum(r["time/step_s"] for r in windows) / len(windows), "rss_gib": windows[-1]["memory/peak_gib"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16, help="steps per run (default 16)")
    parser.add_argument("--warmup", type=int, default=4, help="steps left out of the mean (default 4)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of every loop (default 2)")
    parser.add_argument("--write", help="append the results to this Markdown file (BENCHMARKS.md)")
    parser.add_argument("--bare", help=argparse.SUPPRESS)  # child process: the baseline loop
    args = parser.parse_args()
    if args.bare:
        return bare_loop(args.bare, args.warmup)

    import torch

    env = dict(os.environ, DS_ACCELERATOR="cpu", WANDB_SILENT="true", PYTHONWARNINGS="ignore")
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env["TMPDIR"] = tmp
        make_shards(root)
        load_start = os.getloadavg()[0]
        loops = {
            "trainer, ddp": {"strategy": "ddp"},
            "trainer, fsdp": {"strategy": "fsdp"},
            "trainer, deepspeed ZeRO-2": {"strategy": "deepspeed"},
            "trainer, ddp, activation checkpointing": {"strategy": "ddp"},
        }
        samples = {"bare loop (baseline)": [], **{name: [] for name in loops}}
        # Repeats interleave the loops, so a slow phase of the machine hits all of them alike.
        for repeat in range(args.repeats):
            bare_cfg = config(root, args, root / f"bare{repeat}")
            proc = run([sys.executable, __file__, "--bare", str(bare_cfg), f"--warmup={args.warmup}"], env)
            samples["bare loop (baseline)"].append(
                json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
            )
            for name, train in loops.items():
                out_dir = root / f"{name.replace(' ', '_').replace(',', '')}{repeat}"
                cfg_path = config(root, args, out_dir, **train)
                if "checkpointing" in name:
                    text = yaml.safe_load(cfg_path.read_text())
                    text["model"]["activation_checkpointing"] = ["hiera", "memory_attention"]
                    cfg_path.write_text(yaml.safe_dump(text))
                samples[name].append(trainer_run(cfg_path, out_dir, env))
                print(name, repeat, samples[name][-1], flush=True)
        mean = {name: {k: sum(r[k] for r in runs) / len(runs) for k in ("step_s", "rss_gib")} for name, runs in samples.items()}
        bare = mean["bare loop (baseline)"]
        rows = []
        for name, r in mean.items():
            spread = max(x["step_s"] for x in samples[name]) / min(x["step_s"] for x in samples[name])
            rows.append(
                f"| {name} | {r['step_s']:.3f} (max/min {spread:.2f}) | {r['step_s'] / bare['step_s']:.3f}× | "
                f"{r['rss_gib']:.2f} | {r['rss_gib'] / bare['rss_gib']:.2f}× |"
            )
        load_end = os.getloadavg()[0]
    title = (
        f"### tiny, {args.image_size}², {args.frames}-frame clips, 1 process, fp32, cpu — {datetime.date.today().isoformat()} "
        f"({platform.machine()}, {os.cpu_count()} cores, load average {load_start:.1f} at start, {load_end:.1f} at end, "
        f"torch {torch.__version__}; mean of steps {args.warmup + 1}-{args.steps} over {args.repeats} interleaved repeats)"
    )
    table = "\n".join(
        [
            title,
            "",
            "| loop | s/step (spread over repeats) | time vs bare | peak RSS GiB | RSS vs bare |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if args.write:
        add_run(args.write, HEADING, table)


if __name__ == "__main__":
    main()
