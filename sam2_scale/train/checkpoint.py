"""Saving and resuming training checkpoints: sharded, atomic, with a `latest` pointer and
keep-last-k, in the layout of checkpoints/layout.py. The per-rank trainer state holds RNG states
and the data position of the whole run (the same in every file), as tensors and plain values
only (read weights-only, checkpoints/safe_load.py); prompts are seeded by the step, nothing to keep.

Every rank writes into `step_XXXXXXXX.tmp/`; after a barrier rank 0 adds meta.json and renames
the folder, then rewrites `latest` (temp file + rename). A crash at any moment leaves either a
complete checkpoint or a `.tmp` folder that resume ignores and the next save removes.

A checkpoint resumes on any world size. On another one than it was written by, the engine
reshards model and optimizer state, the data position (global, not per rank) is dealt to the
new ranks, gradient accumulation is recomputed so that the global batch stays what it was
(`resize_accumulation`), and the per-rank generators are derived anew from (seed, step, rank).
"""

import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .. import atomic
from ..checkpoints.layout import (
    ENGINE_DIR,
    LATEST_FILE,
    META_FILE,
    TRAINER_DIR,
    CheckpointError,
    complete_checkpoints,
    latest_checkpoint,
    read_meta,
    step_dir_name,
)
from ..checkpoints.safe_load import torch_load


def rng_state():
    """Every RNG as tensors and plain values: the file must load with weights_only=True."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def derive_rng_state(seed, step, rank):
    """Seeds every per-rank generator from (seed, step, rank): for ranks that have no saved state."""
    torch_seed, numpy_seed, python_seed = np.random.SeedSequence([seed, step, rank]).generate_state(3)
    torch.manual_seed(int(torch_seed))  # and every CUDA device
    np.random.seed(int(numpy_seed))
    random.seed(int(python_seed))


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    def __init__(self, root, keep, dist_info, every=0):
        self.root = Path(root)
        self.keep = keep
        self.dist = dist_info
        self.every = every  # steps between periodic saves (0: only when forced)

    def resolve(self, resume, strategy=None):
        """`auto` (the latest, or None for a fresh start), `none`, or a checkpoint folder. With
        `strategy`, the checkpoint's meta.json is also checked against this run, so that a
        checkpoint it cannot resume from is refused before the model is built."""
        if resume == "none":
            return None
        path = latest_checkpoint(self.root) if resume == "auto" else Path(resume)
        if resume != "auto" and not (path / META_FILE).is_file():
            raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint (no {META_FILE})")
        if path is not None and strategy is not None:
            self.check_compatible(path, strategy)
        return path

    def check_compatible(self, path, strategy):
        """meta.json of `path` is readable and matches this run's strategy."""
        meta = read_meta(path)
        if meta["strategy"] != strategy:
            raise CheckpointError(
                f"{path} was written under train.strategy={meta['strategy']}, this run uses {strategy}: the engine "
                f"states of the strategies differ. Set train.strategy={meta['strategy']}, or export the weights "
                f"(python -m sam2_scale.train.export {path} OUT.pt) and start a new run with model.init_checkpoint=OUT.pt."
            )
        return meta

    def maybe_save(self, step, engine, trainer_state, meta, force=False):
        """Saves every `every` steps and when `force`d (a stop signal, the last step). Collective;
        `trainer_state()` (collective too) is called only when saving. Returns the folder or None."""
        if not (force or (self.every > 0 and step % self.every == 0)):
            return None
        return self.save(step, engine, trainer_state(), meta)

    def save(self, step, engine, trainer_state, meta):
        """Collective: every rank calls it with its own trainer_state."""
        final = self.root / step_dir_name(step)
        tmp = self.root / f"{final.name}.tmp"
        if self.dist.is_main:
            for stale in self.root.glob("step_*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
            (tmp / TRAINER_DIR).mkdir(parents=True)
        dist.barrier()
        engine.save(str(tmp / ENGINE_DIR))
        torch.save(trainer_state, tmp / TRAINER_DIR / f"rank_{self.dist.rank:05d}.pt")
        dist.barrier()
        if self.dist.is_main:
            meta = {**meta, "step": step, "world_size": self.dist.world_size, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
            if final.exists():  # the same step saved again (e.g. preemption right after a periodic save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic.write_text(self.root / LATEST_FILE, final.name)
            for old in complete_checkpoints(self.root)[: -self.keep] if self.keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return final

    def load(self, path, engine):
        """Restores the engine; returns (meta, trainer_state). On another world size than the
        checkpoint's the engine reshards, and trainer_state (rank 0's) holds no RNG state."""
        path = Path(path)
        meta = self.check_compatible(path, engine.name)
        resharded = meta["world_size"] != self.dist.world_size
        # Read first: it is small, and a file that would run code stops the resume before the engine loads.
        trainer_state = torch_load(path / TRAINER_DIR / f"rank_{0 if resharded else self.dist.rank:05d}.pt")
        if resharded:
            trainer_state.pop("rng")
        engine.load(str(path / ENGINE_DIR), resharded=resharded)
        return meta, trainer_state


def resize_accumulation(meta, cfg, world_size):
    """Gradient accumulation for a resume on `world_size` ranks from a checkpoint with `meta`:
    the configured one on the same world size (or with train.allow_global_batch_change), else
    the one that keeps (micro-batches per rank x ranks), the global batch, what it was."""
    saved_world, saved_accum = meta["world_size"], meta.get("config", {}).get("train", {}).get("grad_accum_steps")
    if saved_world == world_size or cfg.train.allow_global_batch_change:
        return cfg.train.grad_accum_steps
    if not isinstance(saved_accum, int):
        raise CheckpointError("meta.json has no config.train.grad_accum_steps: the global batch cannot be kept")
    micro_batches = saved_world * saved_accum
    if micro_batches % world_size:
        raise CheckpointError(
            f"the checkpoint was written by {saved_world} ranks x {saved_accum} accumulation steps = {micro_batches} "
            f"micro-batches per step, which {world_size} ranks cannot share evenly. Resume on a number of ranks that "
            f"divides {micro_batches}, or set train.allow_global_batch_change=true to train on with "
            f"{world_size} x train.grad_accum_steps micro-batches per step."
        )
    return micro_batches // world_size
