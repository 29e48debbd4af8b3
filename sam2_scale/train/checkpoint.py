"""Training checkpoints: sharded, atomic, with a `latest` pointer and keep-last-k.

    <root>/step_00001000/engine/         model + optimizer + schedule (+ EMA), written by the
                                         engine (DCP shards, or DeepSpeed's own files)
    <root>/step_00001000/trainer/rank_00003.pt   per rank: data-loader position, RNG states
                                                 (prompts are seeded by the step: nothing to keep)
    <root>/step_00001000/meta.json       step, strategy, world size, W&B run id, config
    <root>/latest                        name of the newest complete checkpoint

Every rank writes into `step_XXXXXXXX.tmp/`; after a barrier rank 0 adds meta.json and renames
the folder, then rewrites `latest` (temp file + rename). A crash at any moment leaves either a
complete checkpoint or a `.tmp` folder that resume ignores and the next save removes.
"""

import json
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

STEP_DIR = re.compile(r"^step_(\d{8})$")


def atomic_write_text(path, text):
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def rng_state():
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    def __init__(self, root, keep, dist_info):
        self.root = Path(root)
        self.keep = keep
        self.dist = dist_info

    def complete(self):
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if (m := STEP_DIR.match(p.name))]
        return [p for _, p in sorted(found) if (p / "meta.json").is_file()]

    def latest(self):
        """The newest complete checkpoint: the `latest` pointer if it names one, else a scan."""
        pointer = self.root / "latest"
        if pointer.is_file():
            candidate = self.root / pointer.read_text().strip()
            if (candidate / "meta.json").is_file():
                return candidate
        done = self.complete()
        return done[-1] if done else None

    def resolve(self, resume):
        """`auto` (the latest, or None for a fresh start), `none`, or a checkpoint folder."""
        if resume == "none":
            return None
        if resume == "auto":
            return self.latest()
        path = Path(resume)
        if not (path / "meta.json").is_file():
            raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint (no meta.json)")
        return path

    def save(self, step, engine, trainer_state, meta):
        """Collective: every rank calls it with its own trainer_state."""
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f"step_{step:08d}.tmp"
        if self.dist.is_main:
            for stale in self.root.glob("step_*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
            (tmp / "trainer").mkdir(parents=True)
        dist.barrier()
        engine.save(str(tmp / "engine"))
        torch.save(trainer_state, tmp / "trainer" / f"rank_{self.dist.rank:05d}.pt")
        dist.barrier()
        if self.dist.is_main:
            meta = {**meta, "step": step, "world_size": self.dist.world_size, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            if final.exists():  # the same step saved again (e.g. preemption right after a periodic save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic_write_text(self.root / "latest", final.name)
            for old in self.complete()[: -self.keep] if self.keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return final

    def load(self, path, engine):
        """Restores the engine; returns (meta, this rank's trainer_state)."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        if meta["world_size"] != self.dist.world_size:
            raise RuntimeError(
                f"{path} was written by {meta['world_size']} ranks, this run has {self.dist.world_size}: the data-loader "
                "positions are per rank. Start a new run from the weights instead (python -m sam2_scale.train.export, "
                "then model.init_checkpoint=...)."
            )
        engine.load(str(path / "engine"))
        trainer_state = torch.load(path / "trainer" / f"rank_{self.dist.rank:05d}.pt", weights_only=False)
        return meta, trainer_state
