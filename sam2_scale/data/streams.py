"""WebDataset pipelines from shards to clips, composed from named stages.

    shard draws (resampled & seeded per rank/worker/epoch, or each shard once, split by node
    and worker) -> tar members -> samples -> shuffle buffer -> clip (sample, decode, augment)

Bad data never stops a stream: a damaged tar, an undecodable sample or one that cannot give a
clip is skipped, and the number skipped travels with the next clip (`skipped`) so the trainer
can report it. A stream that skips `data.max_skipped_in_a_row` inputs (samples, damaged or empty
shards) without producing one clip cannot work at all (num_frames above what the videos hold,
the wrong `kind`, ...): it raises NoClipsError, naming the dataset, its shards and the reasons,
instead of searching forever.

Resuming ("continues" means): in resampled mode, each worker's shard draws are a deterministic
sequence from (seed, epoch, rank, worker). The loader state records, per worker, the last draw
whose samples reached the trainer; a restored stream starts at the next draw. So the shards that
follow are exactly those the uninterrupted run would have read next, and nothing from the start
is replayed; the rest of the shard in flight and the shuffle buffer at save time are dropped,
not replayed. Restore needs the same seed, world size and number of workers.
"""

import collections
import glob
import os
import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import webdataset as wds
from braceexpand import braceexpand

from .clips import ClipConfig, image_clip, video_clip
from .transforms import AugmentConfig, ClipAugment


@dataclass
class DatasetConfig:
    name: str = "sav"
    shards: str = ""  # glob or brace pattern of shard tars, e.g. /data/sav/shard-{000000..000099}.tar
    kind: str = "video"  # video | image
    batch_size: int = 1
    weight: float = 1.0  # relative probability of a step drawing this dataset
    num_frames: int = 8
    max_num_objects: int = 3
    reverse_time_prob: float = 0.0


@dataclass
class DataConfig:
    datasets: list[DatasetConfig] = field(default_factory=list)
    resolution: int = 1024
    num_workers: int = 2
    shuffle_buffer: int = 64
    seed: int = 0
    resampled: bool = True  # infinite, i.i.d. shard draws (training); False: each shard once (evaluation)
    max_skipped_in_a_row: int = 1000  # inputs skipped without one clip before a dataset is declared unusable
    augment: AugmentConfig = field(default_factory=AugmentConfig)


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


def _rank_and_world():
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
    """The first stage: which shard each worker reads next."""

    def __init__(self, urls, seed, resampled, start_draws=None, worker_phase=0):
        self.urls, self.seed, self.resampled = urls, seed, resampled
        self.epoch = 0
        self.start_draws = start_draws or {}  # worker -> first draw index to read (resume)
        self.worker_phase = worker_phase

    def __iter__(self):
        rank, world = _rank_and_world()
        worker, num_workers = _worker(self.worker_phase)
        if not self.resampled:
            # Each shard exactly once over all ranks and workers.
            for i, url in enumerate(self.urls[rank::world][worker::num_workers]):
                yield {"url": url, "__draw__": i, "__worker__": worker}
            return
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        draw = self.start_draws.get(worker, 0)
        if draw:
            rng.integers(len(self.urls), size=draw)  # fast-forward the deterministic sequence
        while True:
            yield {"url": self.urls[int(rng.integers(len(self.urls)))], "__draw__": draw, "__worker__": worker}
            draw += 1


class TarSamples:
    """Shards -> samples, with each sample tagged by the draw and worker its shard came from."""

    def __init__(self, counter):
        self.counter = counter

    def __call__(self, src):
        for shard in src:
            tags = {"__draw__": shard["__draw__"], "__worker__": shard["__worker__"]}
            samples = wds.tarfile_to_samples(handler=self.counter)(iter([shard]))
            failures_before, index = self.counter.in_a_row, -1
            for index, sample in enumerate(samples):
                sample.update(tags, __index__=index)
                yield sample
            if index < 0 and self.counter.in_a_row == failures_before:  # no sample and no error: an empty tar
                self.counter(EmptyShard(f"{shard['url']}: a shard without samples"))


class Shuffle:
    """A shuffle buffer seeded per (seed, rank, worker): the same stream on every rerun."""

    def __init__(self, size, seed, worker_phase=0):
        self.size, self.seed, self.worker_phase = size, seed, worker_phase

    def __call__(self, src):
        rank, _ = _rank_and_world()
        worker, _ = _worker(self.worker_phase)
        rng = np.random.default_rng([self.seed, 2, rank, worker])
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
    """The last stage: sample -> clip, with the skip count attached.

    Each sample's random choices (frames, objects, augmentation) come from a generator seeded
    by its position in the stream (epoch, rank, worker, shard draw, index in the shard), so a
    restored stream draws exactly what the uninterrupted one would have.
    """

    def __init__(self, cfg, data_cfg, counter, shard_draws):
        self.cfg = ClipConfig(cfg.num_frames, cfg.max_num_objects, cfg.reverse_time_prob)
        self.kind = cfg.kind
        self.resolution = data_cfg.resolution
        self.augment = ClipAugment(data_cfg.resolution, data_cfg.augment)
        self.seed = data_cfg.seed
        self.counter = counter
        self.shard_draws = shard_draws  # for its epoch

    def __call__(self, src):
        rank, _ = _rank_and_world()
        make = video_clip if self.kind == "video" else image_clip
        for sample in src:
            position = [self.seed, 1, self.shard_draws.epoch, rank, sample["__worker__"], sample["__draw__"], sample["__index__"]]
            rng = np.random.default_rng(position)
            try:
                clip = make(sample, self.cfg, self.augment, rng, self.resolution)
            except Exception as exc:  # any bad sample (SkipSample, malformed metadata, ...): skip, count
                self.counter(exc)
                continue
            clip["skipped"] = self.counter.take()
            clip["draw"] = sample.get("__draw__", -1)
            clip["worker"] = sample.get("__worker__", 0)
            yield clip


def clip_pipeline(cfg, data_cfg, start_draws=None, worker_phase=0, epoch=0):
    """A `wds.DataPipeline` yielding batches (lists of clips) of `cfg.batch_size` for one dataset."""
    urls = expand_shards(cfg.shards)
    counter = SkipCounter(cfg.name, cfg.shards, data_cfg.max_skipped_in_a_row)
    draws = ShardDraws(urls, data_cfg.seed, data_cfg.resampled, start_draws, worker_phase)
    draws.epoch = epoch
    stages = [
        draws,
        TarSamples(counter),
        Shuffle(data_cfg.shuffle_buffer, data_cfg.seed, worker_phase) if data_cfg.shuffle_buffer > 1 else None,
        ClipMaker(cfg, data_cfg, counter, draws),
        wds.batched(cfg.batch_size, collation_fn=list, partial=not data_cfg.resampled),
    ]
    pipeline = wds.DataPipeline(*[s for s in stages if s is not None])
    pipeline.shard_draws = draws
    return pipeline
