"""A tiny training run for tests: the config of a 64 px tiny model on synthetic shards, and the
trainer run as a user runs it, in a process of its own."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def trainer_env(tmp_path):
    """One thread per rank, DeepSpeed on the CPU, temporary files under the test's folder."""
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", TMPDIR=str(tmp_path), WANDB_SILENT="true")
    env["PYTHONWARNINGS"] = "ignore"
    return env


def train(tmp_path, config, *args, timeout=300):
    """`python -m sam2_scale.train --config CONFIG ARGS` in one process; the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "sam2_scale.train", "--config", str(config), *args],
        cwd=ROOT,
        env=trainer_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_config(path, shards, out_dir, **sections):
    cfg = {
        "model": {"size": "tiny", "image_size": 64, "drop_path_rate": 0.1},
        "prompts": {"num_correction_pt_per_frame": 2},
        "optim": {"base_lr": 1e-4, "vision_lr": 1e-4, "layer_decay": 1.0, "total_steps": 8, "warmup_steps": 1},
        "data": {
            "resolution": 64,
            "num_workers": 0,
            "shuffle_buffer": 1,
            "datasets": [
                {"name": "sav", "shards": str(shards / "sav/shard-*.tar"), "kind": "video", "batch_size": 1, "num_frames": 3},
                {"name": "sa1b", "shards": str(shards / "sa1b/shard-*.tar"), "kind": "image", "batch_size": 2, "num_frames": 1},
            ],
        },
        "train": {"out_dir": str(out_dir), "precision": "fp32", "log_every": 1},
        "checkpoint": {"every": 2, "keep": 10},
        "wandb": {"mode": "disabled"},
        "eval": {},
    }
    for section, values in sections.items():
        cfg[section].update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path
