"""Several datasets, each with its own batch size, mixed per optimizer step.

Every step draws one dataset, with probability proportional to its weight, from a generator
seeded by (seed, epoch, step): the same dataset on every rank, so the collectives of a step
(which depend on batch shapes and on whether the memory modules run) stay in lockstep. Batches
are never mixed across datasets.

The state describes the progress of the whole run, not of one rank: the epoch, the step in it,
and per dataset the samples consumed so far by all ranks together (a Ledger, gathered from
every rank when the state is taken). So a run can continue on another number of ranks or
workers: the samples not yet consumed are dealt to the new slots, none is read twice and none
is left out (streams.py); a changed number of micro-batches per epoch (another gradient
accumulation) maps the position to the same optimizer step.
"""

import signal

import numpy as np
import torch
import torch.distributed as dist

from .batch import collate_clips
from .ledger import Ledger
from .streams import clip_pipeline, rank_and_world


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
        self.skipped = 0
        self._new_epoch()
        if state:
            self.load_state_dict(state)

    def _new_epoch(self):
        names = [d.name for d in self.cfg.datasets]
        self.ledgers = {name: Ledger() for name in names}  # samples consumed this epoch, all ranks
        self.layouts = {name: Ledger() for name in names}  # the consumption the slots were dealt from
        self.batches = {name: 0 for name in names}  # batches taken since then (the next worker due)
        self._iters = None

    def num_slots(self):
        return rank_and_world()[1] * max(self.cfg.num_workers, 1)

    def _loaders(self):
        loaders = []
        for d in self.cfg.datasets:
            pipeline = clip_pipeline(
                d,
                self.cfg,
                epoch=self.epoch,
                layout=self.layouts[d.name],
                ledger=Ledger.from_state(self.ledgers[d.name].state_dict()),  # a snapshot, not the live one
                worker_phase=self.batches[d.name] % max(self.cfg.num_workers, 1),
            )
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
                for draw, sample, last in clip["consumed"]:
                    self.ledgers[name].record(draw, sample, last)
            self.batches[name] += 1
            batch = collate_clips(clips, dataset=name, pin_memory=self.pin_memory)
            self.skipped += batch.metadata["skipped"]
            self.step += 1
            yield batch
        self.epoch += 1
        self.step = 0
        self._new_epoch()  # a new epoch draws its shards anew

    def state_dict(self):
        """The run's data position. Collective under torch.distributed: every rank's consumption
        is gathered, and every rank returns the same state."""
        local = ({name: ledger.state_dict() for name, ledger in self.ledgers.items()}, self.skipped)
        everyone = [local]
        if dist.is_available() and dist.is_initialized():
            everyone = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, local)
        self.ledgers = {name: Ledger.union([ledgers[name] for ledgers, _ in everyone]) for name in self.ledgers}
        return {
            "epoch": self.epoch,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "skipped": sum(skipped for _, skipped in everyone),
            "seed": self.cfg.seed,
            "slots": self.num_slots(),
            "datasets": {
                name: {
                    "ledger": self.ledgers[name].state_dict(),
                    "layout": self.layouts[name].state_dict(),
                    "batches": self.batches[name],
                }
                for name in self.ledgers
            },
        }

    def load_state_dict(self, state):
        if "datasets" not in state:
            raise ValueError(
                "loader state of an older version (per-rank stream positions): it cannot be continued; "
                "start a new run from the weights (python -m sam2_scale.train.export, then model.init_checkpoint=...)"
            )
        if state["seed"] != self.cfg.seed:
            raise ValueError(
                f"loader state was saved with data.seed={state['seed']}, now {self.cfg.seed}: the stream cannot continue"
            )
        step = state["step"] * self.steps_per_epoch
        if step % state["steps_per_epoch"]:
            raise ValueError(
                f"loader state at micro-batch {state['step']} of {state['steps_per_epoch']} per epoch has no place in an epoch "
                f"of {self.steps_per_epoch}: it was not saved at an optimizer step"
            )
        self._new_epoch()
        self.epoch, self.step = state["epoch"], step // state["steps_per_epoch"]
        rank, _ = rank_and_world()
        self.skipped = state["skipped"] if rank == 0 else 0  # summed over ranks when logged
        same_slots = state["slots"] == self.num_slots()
        for name, saved in state["datasets"].items():
            if name not in self.ledgers:
                continue  # a dataset no longer in the mix
            self.ledgers[name] = Ledger.from_state(saved["ledger"])
            if same_slots:  # every slot continues its own draws
                self.layouts[name], self.batches[name] = Ledger.from_state(saved["layout"]), saved["batches"]
            else:  # what is left is dealt anew to the new slots
                self.layouts[name], self.batches[name] = Ledger.from_state(saved["ledger"]), 0
