"""Several datasets, each with its own batch size, mixed per optimizer step.

Every step draws one dataset, with probability proportional to its weight, from a generator
seeded by (seed, epoch, step): the same dataset on every rank, so the collectives of a step
(which depend on batch shapes and on whether the memory modules run) stay in lockstep. Batches
are never mixed across datasets.
"""

import signal

import numpy as np
import torch

from .batch import collate_clips
from .streams import clip_pipeline


def _worker_init(_):
    torch.set_num_threads(1)  # workers decode and warp; intra-op threads would oversubscribe
    # SIGUSR1 / SIGUSR2 sent to the whole process group (scancel --signal, kill -- -PGID) are for the
    # rank, which checkpoints and then ends its workers; a worker killed by one would fail the rank's
    # next batch. (SIGTERM stays as it is: multiprocessing and the DataLoader stop workers with it.)
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


class MixedLoader:
    def __init__(self, data_cfg, steps_per_epoch, state=None, pin_memory=False):
        """pin_memory: hand out batches in page-locked memory (for asynchronous copies to a GPU)."""
        if not data_cfg.datasets:
            raise ValueError("no datasets configured (data.datasets is empty)")
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}: an epoch without batches never ends")
        self.cfg = data_cfg
        self.steps_per_epoch = steps_per_epoch
        self.pin_memory = pin_memory
        weights = np.array([d.weight for d in data_cfg.datasets], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"dataset weights must be >= 0 and not all 0, got {weights.tolist()}")
        self.probs = weights / weights.sum()
        self.epoch, self.step = 0, 0
        # dataset -> worker -> last shard draw delivered (the resume position), and batches taken.
        self.positions = {d.name: {} for d in data_cfg.datasets}
        self.batches_taken = {d.name: 0 for d in data_cfg.datasets}
        self.skipped = 0
        if state:
            self.load_state_dict(state)
        self._iters = None

    def _loaders(self):
        loaders = []
        for d in self.cfg.datasets:
            start = {int(w): draw + 1 for w, draw in self.positions[d.name].items()}
            phase = self.batches_taken[d.name] % max(self.cfg.num_workers, 1)
            pipeline = clip_pipeline(d, self.cfg, start_draws=start, worker_phase=phase, epoch=self.epoch)
            loaders.append(
                torch.utils.data.DataLoader(
                    pipeline,
                    batch_size=None,
                    num_workers=self.cfg.num_workers,
                    worker_init_fn=_worker_init,
                    persistent_workers=False,
                    prefetch_factor=2 if self.cfg.num_workers else None,
                    # Its own generator: starting an iterator must not draw from the global torch
                    # RNG, which drives dropout and is restored exactly on resume.
                    generator=torch.Generator().manual_seed(self.cfg.seed),
                )
            )
        return loaders

    def choose(self, step):
        """The dataset index of `step` of the current epoch (identical on every rank)."""
        rng = np.random.default_rng([self.cfg.seed, self.epoch, step])
        return int(rng.choice(len(self.probs), p=self.probs))

    def __iter__(self):
        """One epoch of `steps_per_epoch` Batches (continuing mid-epoch after a restore)."""
        if self._iters is None:
            self._iters = [iter(loader) for loader in self._loaders()]
        while self.step < self.steps_per_epoch:
            index = self.choose(self.step)
            name = self.cfg.datasets[index].name
            clips = next(self._iters[index])
            for clip in clips:
                if clip["draw"] >= 0:
                    previous = self.positions[name].get(clip["worker"], -1)
                    self.positions[name][clip["worker"]] = max(previous, clip["draw"])
            self.batches_taken[name] += 1
            batch = collate_clips(clips, dataset=name, pin_memory=self.pin_memory)
            self.skipped += batch.metadata["skipped"]
            self.step += 1
            yield batch
        self.epoch += 1
        self.step = 0
        self.positions = {name: {} for name in self.positions}
        self.batches_taken = {name: 0 for name in self.batches_taken}
        self._iters = None  # a new epoch reseeds the shard draws

    def state_dict(self):
        return {
            "epoch": self.epoch,
            "step": self.step,
            "skipped": self.skipped,
            "positions": {name: {str(w): d for w, d in pos.items()} for name, pos in self.positions.items()},
            "batches_taken": dict(self.batches_taken),
            "num_workers": self.cfg.num_workers,
            "seed": self.cfg.seed,
        }

    def load_state_dict(self, state):
        if state["num_workers"] != self.cfg.num_workers or state["seed"] != self.cfg.seed:
            raise ValueError(
                f"loader state was saved with seed {state['seed']} and {state['num_workers']} workers; "
                f"now seed {self.cfg.seed} and {self.cfg.num_workers} workers: the stream cannot continue"
            )
        self.epoch, self.step, self.skipped = state["epoch"], state["step"], state["skipped"]
        self.positions = {name: {int(w): d for w, d in pos.items()} for name, pos in state["positions"].items()}
        self.batches_taken = dict(state["batches_taken"])
        self._iters = None
