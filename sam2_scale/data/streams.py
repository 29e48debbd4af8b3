"""WebDataset pipelines from shards to clips, composed from named stages.

    shard draws (resampled & seeded per rank/worker/epoch, or each shard once, split by node
    and worker) -> tar members -> samples -> shuffle buffer -> clip (sample, decode, augment)

Bad data never stops a stream: a damaged tar, an undecodable sample or one that cannot give a
clip is skipped, and the number skipped travels with the next clip (`skipped`) so the trainer
can report it. A stream that skips `data.max_skipped_in_a_row` inputs (samples, damaged or empty
shards) without producing one clip cannot work at all (num_frames above what the videos hold,
the wrong `kind`, ...): it raises NoClipsError, naming the dataset, its shards and the reasons,
instead of searching forever.

Resuming: a dataset's epoch is one world-size-independent sequence of shard draws (see
ledger.py). The draws still to read when a stream starts (`layout`, a Ledger) are dealt round
robin to the run's slots (rank x DataLoader worker), and each slot skips what the current
ledger says is consumed. A restored stream at the same layout therefore continues every slot
exactly where it stopped (the rest of a partly read shard first); at another world size or
worker count the unread draws are dealt anew. Either way no consumed sample is read again and
none is left out; only the shuffle buffer's order at save time is lost.
"""

import collections
import glob
import os
import re

import numpy as np
import torch
import torch.distributed as dist
import webdataset as wds
from braceexpand import braceexpand

from .clips import ClipConfig, image_clip, video_clip
from .ledger import Ledger
from .transforms import ClipAugment


def expand_shards(pattern):
    urls = []
    for part in braceexpand(pattern):
        matches = sorted(glob.glob(part)) if any(c in part for c in "*?[") else [part]
        urls += matches
    if not urls:
        raise FileNotFoundError(f"no shard matches {pattern!r}")
    missing = [u for u in urls if "://" not in u and not os.path.exists(u)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) of {pattern!r} do not exist, e.g. {missing[0]}")
    return urls


def rank_and_world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _worker(phase=0):
    """(logical worker id, number of workers). A DataLoader hands out batches from its workers
    in turn, starting with worker 0; a restored loader whose next batch was due from worker k
    lets physical worker i play logical worker (i + k) mod n, so the order continues."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return 0, 1
    return (info.id + phase) % info.num_workers, info.num_workers


class NoClipsError(RuntimeError):
    """A dataset skipped `data.max_skipped_in_a_row` inputs in a row without producing a clip."""


class EmptyShard(Exception):
    """A shard that holds no sample: drawing it again and again would never give a clip."""


def skip_reason(exc):
    """A short reason shared by similar failures: the sample id that starts a message is dropped."""
    lines = str(exc).strip().splitlines()
    message = re.sub(r"^[^\s:]+: ", "", lines[0]) if lines else ""  # "sav_000123: too short" -> "too short"
    reason = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return reason[:160]


class SkipCounter:
    """A webdataset error handler that counts instead of raising (one per worker process), until
    `limit` inputs in a row have failed: then the dataset cannot give clips and NoClipsError says why."""

    def __init__(self, dataset="", shards="", limit=0):
        self.dataset, self.shards, self.limit = dataset, shards, limit
        self.count = 0  # skipped samples not yet reported with a clip
        self.in_a_row = 0  # failed inputs since the last clip
        self.reasons = collections.Counter()

    def __call__(self, exc):
        if not isinstance(exc, EmptyShard):
            self.count += 1
        self.in_a_row += 1
        self.reasons[skip_reason(exc)] += 1
        if self.limit and self.in_a_row >= self.limit:
            raise NoClipsError(self.describe()) from None
        return True  # continue

    def describe(self):
        reasons = "; ".join(f"{n} x {reason}" for reason, n in self.reasons.most_common(5))
        return (
            f"dataset {self.dataset!r} (shards {self.shards}) gave no clip from {self.in_a_row} inputs in a row "
            f"(data.max_skipped_in_a_row); reasons: {reasons}. Check its kind, num_frames and max_num_objects "
            "against the shards (python data_prep/verify_shards.py DIR lists what they hold)."
        )

    def take(self):
        """The skip count to report with the clip just made; the run of failures ends."""
        n, self.count, self.in_a_row = self.count, 0, 0
        self.reasons.clear()
        return n


class ShardDraws(torch.utils.data.IterableDataset):
    """The first stage: which shard draws this slot (rank, worker) reads, in order.

    The unread draws of `layout` go round robin to the slots; those `ledger` (what the run has
    consumed since) marks finished are passed over, and a partly consumed one carries the
    indices of its samples already taken.
    """

    def __init__(self, urls, seed, resampled, epoch=0, layout=None, ledger=None, worker_phase=0):
        self.urls, self.seed, self.resampled, self.epoch = urls, seed, resampled, epoch
        self.layout = layout or Ledger()
        self.ledger = ledger or Ledger()
        self.worker_phase = worker_phase

    def _shard_of_draw(self):
        if not self.resampled:
            return self.urls.__getitem__
        rng = np.random.default_rng([self.seed, self.epoch])
        drawn = np.empty(0, dtype=np.int64)

        def shard(draw):  # the i.i.d. sequence of the epoch, extended on demand
            nonlocal drawn
            while draw >= len(drawn):
                drawn = np.concatenate([drawn, rng.integers(len(self.urls), size=max(1024, len(drawn)))])
            return self.urls[int(drawn[draw])]

        return shard

    def __iter__(self):
        rank, world = rank_and_world()
        worker, num_workers = _worker(self.worker_phase)
        slot, slots = worker * world + rank, world * num_workers
        shard_of = self._shard_of_draw()
        pending = self.layout.pending(None if self.resampled else len(self.urls))
        for i, draw in enumerate(pending):
            if i % slots == slot and not self.ledger.is_finished(draw):
                yield {"url": shard_of(draw), "__draw__": draw, "__taken__": self.ledger.taken_in(draw)}


class TarSamples:
    """Shards -> samples, each tagged with its draw, its index in the shard and whether it is the
    shard's last; samples the ledger already counts as taken are passed over."""

    def __init__(self, counter):
        self.counter = counter

    def __call__(self, src):
        for shard in src:
            samples = wds.tarfile_to_samples(handler=self.counter)(iter([shard]))
            failures_before, index, held = self.counter.in_a_row, -1, None
            for index, sample in enumerate(samples):
                if held is not None:
                    yield held
                taken = index in shard["__taken__"]
                held = None if taken else {**sample, "__draw__": shard["__draw__"], "__index__": index, "__last__": False}
            if held is not None:
                held["__last__"] = True  # one sample behind the reader, so that the last one is known
                yield held
            if index < 0 and self.counter.in_a_row == failures_before:  # no sample and no error: an empty tar
                self.counter(EmptyShard(f"{shard['url']}: a shard without samples"))


class Shuffle:
    """A shuffle buffer seeded per (seed, epoch, rank, worker): the same stream on every rerun."""

    def __init__(self, size, seed, epoch=0, worker_phase=0):
        self.size, self.seed, self.epoch, self.worker_phase = size, seed, epoch, worker_phase

    def __call__(self, src):
        rank, _ = rank_and_world()
        worker, _ = _worker(self.worker_phase)
        rng = np.random.default_rng([self.seed, 2, self.epoch, rank, worker])
        buffer = []
        for sample in src:
            if len(buffer) < self.size:
                buffer.append(sample)
                continue
            i = int(rng.integers(len(buffer)))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)
        yield from buffer


class ClipMaker:
    """The last stage: sample -> clip, with the skip count and the consumed positions attached.

    Each sample's random choices (frames, objects, augmentation) come from a generator seeded
    by its place in the epoch (epoch, draw, index in the shard), so it is the same clip whichever
    rank reads it, and a restored stream draws exactly what the uninterrupted one would have.
    A clip carries `consumed`: its own (draw, index, last) and those of the samples skipped
    since the previous clip, for the ledger.
    """

    def __init__(self, cfg, data_cfg, counter, epoch=0):
        self.cfg = ClipConfig(cfg.num_frames, cfg.max_num_objects, cfg.reverse_time_prob)
        self.kind = cfg.kind
        self.resolution = data_cfg.resolution
        self.augment = ClipAugment(data_cfg.resolution, data_cfg.augment)
        self.seed, self.epoch = data_cfg.seed, epoch
        self.counter = counter

    def __call__(self, src):
        make = video_clip if self.kind == "video" else image_clip
        passed = []
        for sample in src:
            position = (sample["__draw__"], sample["__index__"], sample["__last__"])
            rng = np.random.default_rng([self.seed, 1, self.epoch, sample["__draw__"], sample["__index__"]])
            try:
                clip = make(sample, self.cfg, self.augment, rng, self.resolution)
            except Exception as exc:  # any bad sample (SkipSample, malformed metadata, ...): skip, count
                self.counter(exc)
                passed.append(position)
                continue
            clip["skipped"] = self.counter.take()
            clip["consumed"], passed = passed + [position], []
            yield clip


def clip_pipeline(cfg, data_cfg, epoch=0, layout=None, ledger=None, worker_phase=0):
    """A `wds.DataPipeline` yielding batches (lists of clips) of `cfg.batch_size` for one dataset:
    the samples of `epoch` that `ledger` does not hold, dealt to slots from `layout`."""
    urls = expand_shards(cfg.shards)
    counter = SkipCounter(cfg.name, cfg.shards, data_cfg.max_skipped_in_a_row)
    stages = [
        ShardDraws(urls, data_cfg.seed, data_cfg.resampled, epoch, layout, ledger, worker_phase),
        TarSamples(counter),
        Shuffle(data_cfg.shuffle_buffer, data_cfg.seed, epoch, worker_phase) if data_cfg.shuffle_buffer > 1 else None,
        ClipMaker(cfg, data_cfg, counter, epoch),
        wds.batched(cfg.batch_size, collation_fn=list, partial=not data_cfg.resampled),
    ]
    return wds.DataPipeline(*[s for s in stages if s is not None])
