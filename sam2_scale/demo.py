"""`make demo`: the whole pipeline on a laptop, with the tools a cluster run uses.

  1. raw synthetic SA-V videos, SA-1B images and held-out DAVIS-style videos  (data_prep/make_synthetic.py)
  2. WebDataset shards, built in parallel and verified                     (data_prep/make_shards.py)
  3. a tiny SAM 2.1 trained from scratch by 2 processes under DeepSpeed ZeRO-2 (bf16 where the
     CPU has it natively), activation checkpointing and gradient accumulation, W&B offline;
     J&F on the held-out videos before training and every 50 steps  (python -m sam2_scale.train)
  4. a Meta-format checkpoint, reloaded strictly and evaluated standalone (sam2_scale.train.export, sam2_scale.eval)
  5. a plot of the loss terms and J&F over the steps, and a summary

Everything lands in --out (default runs/demo). The training config is configs/demo_tiny_cpu.yaml;
the full run raises held-out J&F by at least 0.3 over the untrained model in about 11 minutes of
training on 2 CPU cores.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sam2_scale import atomic
from sam2_scale.config import load_config
from sam2_scale.train.distributed import cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/demo_tiny_cpu.yaml"
TARGET_GAIN = 0.3  # held-out J&F over the untrained model that the full demo must reach


def log(message):
    print(f"[demo] {message}", flush=True)


def run(cmd, env=None, quiet=False):
    """Run a stage's command; its output streams through unless `quiet` (then it is shown on failure)."""
    cmd = [str(c) for c in cmd]
    result = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=quiet)
    if result.returncode != 0:
        if quiet:
            print(result.stdout[-3000:], result.stderr[-5000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"[demo] failed (exit {result.returncode}): {' '.join(cmd)}")
    return result


def make_data(out, workers):
    raw, shards = out / "raw", out / "shards"
    py = sys.executable
    run([py, "data_prep/make_synthetic.py", "--out", raw, "--videos", 48, "--images", 16, "--heldout", 16,
         "--frames", 48, "--size", "192x144", "--style", "easy", "--seed", 0])  # fmt: skip
    jobs = {
        "sav": ["sav", "--videos", raw / "sav/videos", "--annotations", raw / "sav/annotations", "--items-per-shard", 4],
        "sa1b": ["sa1b", "--src", raw / "sa1b", "--items-per-shard", 2],
        "heldout": ["davis", "--frames", raw / "davis/JPEGImages", "--masks", raw / "davis/Annotations", "--items-per-shard", 1],
    }
    for name, args in jobs.items():
        run([py, "data_prep/make_shards.py", *args, "--out", shards / name, "--workers", workers, "--no-progress"], quiet=True)
    result = run([py, "data_prep/verify_shards.py", *(shards / name for name in jobs)], quiet=True)
    log(f"shards in {shards}: " + "; ".join(line.strip() for line in result.stdout.splitlines() if line.strip())[:300])
    return shards


def plot(metrics_path, png_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    train = [r for r in records if "loss/core" in r]
    evals = [r for r in records if "eval/clip_J&F" in r]
    fig, (ax_loss, ax_jf) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in train]
    for key, label in (("loss/mask", "focal x20"), ("loss/dice", "dice"), ("loss/iou", "IoU"), ("loss/class", "object score")):
        weight = 20.0 if key == "loss/mask" else 1.0
        ax_loss.plot(steps, [weight * r[key] for r in train], label=label)
    ax_loss.plot(steps, [r["loss/core"] for r in train], label="total", color="black", linewidth=1.5)
    ax_loss.set(xlabel="optimizer step", ylabel="loss (weighted terms)", yscale="log", title="training loss")
    ax_loss.legend()
    for key in ("eval/clip_J&F", "eval/clip_J", "eval/clip_F"):
        ax_jf.plot([r["step"] for r in evals], [r[key] for r in evals], marker="o", label=key.split("/")[1])
    ax_jf.set(xlabel="optimizer step", ylabel="score", ylim=(0, 1), title="held-out videos, first-frame mask propagated")
    ax_jf.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    return evals


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sam2_scale.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps (default: the config's)")
    parser.add_argument("--workers", type=int, default=2, help="data-prep processes (default 2)")
    parser.add_argument("--nproc", type=int, default=2, help="training processes (default 2)")
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="auto (default): bf16 where the CPU has native bf16 (AVX512-BF16 / AMX), else fp32",
    )
    parser.add_argument("overrides", nargs="*", help="training config overrides, e.g. train.strategy=fsdp optim.base_lr=5e-4")
    args = parser.parse_args(argv)
    start = time.time()
    out = Path(args.out).resolve()
    os.chdir(ROOT)  # as every stage runs: relative paths in the config (ds_configs/...) are from the repository
    cfg = load_config(CONFIG, args.overrides)  # fails early, naming a wrong key
    train_dir = out / "train"

    shards = make_data(out, args.workers)
    log(f"data ready in {time.time() - start:.0f} s")

    overrides = [
        f"train.out_dir={train_dir}",
        f"eval.shards={shards}/heldout/shard-*.tar",
        f"data.datasets=[{{name: sav, shards: '{shards}/sav/shard-*.tar', kind: video, batch_size: 1, weight: 4.0, "
        f"num_frames: 4, max_num_objects: 3}}, {{name: sa1b, shards: '{shards}/sa1b/shard-*.tar', kind: image, "
        f"batch_size: 2, weight: 1.0, num_frames: 1, max_num_objects: 3}}]",
    ]
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if cpu_has_native_bf16() else "fp32"
        if precision == "fp32":
            log(
                "no native bf16 on this CPU (AVX512-BF16 / AMX): it is emulated ~10x slower, so training runs in fp32 "
                "(--precision bf16 forces it)"
            )
    overrides.append(f"train.precision={precision}")
    if args.steps:
        overrides.append(f"optim.total_steps={args.steps}")
        overrides.append(f"optim.warmup_steps={min(cfg.optim.warmup_steps, args.steps)}")  # warmup fits in the run
        overrides.append(f"eval.every={max(args.steps // 2, 1)}")
    overrides += args.overrides
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", WANDB_MODE="offline", WANDB_SILENT="true")
    env.setdefault("PYTHONWARNINGS", "ignore")
    train_start = time.time()
    run(
        [sys.executable, "-m", "sam2_scale.train.torchrun", "--standalone", f"--nproc_per_node={args.nproc}",
         "-m", "sam2_scale.train", "--config", CONFIG, "--resume", "none", *overrides],
        env=env,
    )  # fmt: skip
    log(f"training done in {time.time() - train_start:.0f} s")

    exported = out / "sam2.1_hiera_tiny_demo.pt"
    ema = ["--ema"] if cfg.train.ema_decay > 0 else []  # the weights the trainer evaluated
    run([sys.executable, "-m", "sam2_scale.train.export", train_dir, exported, *ema], env=env, quiet=True)
    scores_path = out / "eval_exported.json"
    result = run(
        [sys.executable, "-m", "sam2_scale.eval", exported, "--size", "tiny", "--image-size", cfg.model.image_size,
         "--shards", f"{shards}/heldout/shard-*.tar", "--protocol", "clip", "--num-frames", cfg.eval.num_frames,
         "--json", scores_path, "--precision", "bf16" if precision == "bf16" else "fp32"],
        env=env,
        quiet=True,
    )  # fmt: skip
    log(f"exported {exported}, reloaded strictly and evaluated standalone: {result.stdout.strip()}")

    evals = plot(train_dir / "metrics.jsonl", out / "training.png")
    before, after = evals[0]["eval/clip_J&F"], evals[-1]["eval/clip_J&F"]
    wandb_runs = sorted((train_dir / "wandb").glob("offline-run-*"))
    summary = {"jf_before": before, "jf_after": after, "jf_gain": after - before, "seconds": time.time() - start}
    verdict = "learned" if after - before >= TARGET_GAIN else f"below the +{TARGET_GAIN} of the full demo"
    summary["learned"] = after - before >= TARGET_GAIN
    atomic.write_json(out / "summary.json", summary)
    print(
        f"""
[demo] held-out J&F: {before:.3f} before training -> {after:.3f} after ({after - before:+.3f}, {verdict})
       {time.time() - start:.0f} s in all
       shards           {shards}
       run              {train_dir}  (config.yaml, metrics.jsonl, checkpoints/)
       W&B (offline)    {wandb_runs[-1] if wandb_runs else "-"}  ->  wandb sync <that folder>
       checkpoint       {exported}  (Meta format)
       plot             {out / "training.png"}""",
        flush=True,
    )


if __name__ == "__main__":
    main()
