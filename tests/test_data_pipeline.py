"""The streaming input pipeline: shards -> augmented clips -> mixed batches."""

import io
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sam2_scale.config import AugmentConfig, DataConfig, DatasetConfig
from sam2_scale.data.batch import collate_clips
from sam2_scale.data.ledger import Ledger
from sam2_scale.data.mixing import MixedLoader
from sam2_scale.data.streams import clip_pipeline
from sam2_scale.data.transforms import ClipAugment
from sam2_scale.prep.sa1b import Sa1bSource, find_sa1b_items
from sam2_scale.prep.sav import SavSource, find_sav_items
from sam2_scale.prep.shards import plan_shards, run_shards, write_manifest
from sam2_scale.synthetic import write_synthetic_dataset
from sam2_scale.train.distributed import free_port


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """4 SA-V videos and 8 SA-1B images, one sample per shard (so ranks x workers all get data)."""
    root = tmp_path_factory.mktemp("pipeline")
    write_synthetic_dataset(root / "raw", num_videos=4, num_images=8, num_heldout=0, num_frames=40, seed=11)
    for kind, source, items in (
        ("sav", SavSource(), find_sav_items(root / "raw/sav/videos", root / "raw/sav/annotations")),
        ("sa1b", Sa1bSource(), find_sa1b_items(root / "raw/sa1b")),
    ):
        plans = plan_shards(items, 1)
        run_shards(plans, root / kind, source, workers=1, progress=False)
        write_manifest(root / kind, plans, kind, {})
    return root


def data_cfg(root, num_workers=0, resampled=True, seed=0, shuffle_buffer=1, weights=(1.0, 1.0)):
    return DataConfig(
        datasets=[
            DatasetConfig("sav", str(root / "sav/shard-*.tar"), "video", batch_size=1, weight=weights[0], num_frames=4),
            DatasetConfig(
                "sa1b", str(root / "sa1b/shard-*.tar"), "image", batch_size=3, weight=weights[1], num_frames=1, max_num_objects=2
            ),
        ],
        resolution=64,
        num_workers=num_workers,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        resampled=resampled,
    )


def test_augmentation_keeps_masks_on_their_pixels():
    """A red square on blue: after flip + rotation + shear + resize, mask pixels are red."""
    h, w = 90, 120
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 2] = 255
    mask = np.zeros((1, 1, h, w), bool)
    mask[0, 0, 20:60, 30:80] = True
    image[mask[0, 0]] = (255, 0, 0)
    augment = ClipAugment(
        64,
        AugmentConfig(
            brightness=0, contrast=0, saturation=0, grayscale_prob=0, frame_brightness=0, frame_contrast=0, frame_saturation=0
        ),
    )
    moved = 0
    for seed in range(12):
        frames, masks = augment([image], mask, np.random.default_rng(seed))
        assert frames.dtype == torch.uint8
        rgb = frames[0].float() / 255
        m = masks[0, 0]
        # Two pixels in from the mask's edge the image must be red, two pixels out not
        # (edges are blended by the antialiased resize and the bilinear warp).
        interior = -torch.nn.functional.max_pool2d(-m[None].float(), 5, 1, 2)[0] > 0.5
        exterior = torch.nn.functional.max_pool2d(m[None].float(), 5, 1, 2)[0] < 0.5
        assert interior.sum() > 100 and exterior.sum() > 100
        assert (rgb[0][interior] > 0.9).all(), seed
        red = (rgb[0] > 0.5) & (rgb[2] < 0.1)  # the fill of uncovered pixels is grey, not red
        assert not red[exterior].any(), seed
        moved += not torch.equal(m, torch.nn.functional.interpolate(torch.from_numpy(mask).float(), size=(64, 64))[0, 0] > 0.5)
    assert moved >= 10, "the geometric augmentation must actually move things"


def test_affine_is_skipped_when_an_object_would_vanish():
    h = w = 64
    image = np.full((h, w, 3), 128, np.uint8)
    mask = np.zeros((1, 1, h, w), bool)
    mask[0, 0, 0:2, 0:2] = True  # a corner speck: most rotations push it out of the frame
    augment = ClipAugment(64)
    for seed in range(20):
        _, masks = augment([image], mask, np.random.default_rng(seed))
        assert masks[0, 0].any(), seed


def test_clips_batches_and_shapes(shards):
    cfg = data_cfg(shards)
    loader = MixedLoader(cfg, steps_per_epoch=8)
    seen = Counter()
    for batch in loader:
        name = batch.metadata["dataset"]
        seen[name] += 1
        if name == "sav":
            assert batch.frames.shape == (4, 1, 3, 64, 64)
            assert 1 <= batch.masks.shape[1] <= 3
            # Objects were visible on the clip's first frame.
            assert batch.masks[0].flatten(1).any(1).all()
        else:
            assert batch.frames.shape == (1, 3, 3, 64, 64)
            assert batch.masks.shape[1] <= 6
            assert batch.obj_to_frame_idx[0, :, 1].tolist() == sorted(batch.obj_to_frame_idx[0, :, 1].tolist())
    assert sum(seen.values()) == 8 and loader.state_dict()["epoch"] == 1


def test_mixing_follows_weights_and_is_rank_independent():
    cfg = DataConfig(datasets=[DatasetConfig("a", "x", weight=3.0), DatasetConfig("b", "y", weight=1.0)])
    a, b = MixedLoader(cfg, 1000), MixedLoader(cfg, 1000)
    picks = [a.choose(s) for s in range(1000)]
    assert picks == [b.choose(s) for s in range(1000)], "every rank must pick the same dataset per step"
    assert abs(picks.count(0) / 1000 - 0.75) < 0.05
    with pytest.raises(ValueError, match="weights"):
        MixedLoader(DataConfig(datasets=[DatasetConfig("a", "x", weight=0.0)]), 1)


def _write_corrupt_shard(path, good_sample):
    """A shard with a bad JPEG sample, a bad-JSON sample, and a good one."""
    with tarfile.open(path, "w") as tar:

        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        meta = json.loads(good_sample["json"])
        add("bad_jpeg.jpg", b"\xff\xd8garbage")
        add("bad_jpeg.json", good_sample["json"])
        add("bad_json.jpg", good_sample["jpg"])
        add("bad_json.json", b"{oops")
        add("good.jpg", good_sample["jpg"])
        add("good.json", json.dumps(meta).encode())


def test_corrupt_samples_are_skipped_and_counted(shards, tmp_path):
    import webdataset as wds

    good = next(iter(wds.WebDataset(str(shards / "sa1b/shard-000000.tar"), shardshuffle=False, empty_check=False)))
    _write_corrupt_shard(tmp_path / "bad.tar", good)
    (tmp_path / "truncated.tar").write_bytes((shards / "sa1b/shard-000001.tar").read_bytes()[:700])
    cfg = DataConfig(datasets=[], resolution=32, num_workers=0, shuffle_buffer=1, resampled=False)
    ds = DatasetConfig("x", str(tmp_path / "{bad,truncated}.tar"), "image", batch_size=1, num_frames=1)
    batches = list(clip_pipeline(ds, cfg))
    clips = [c for b in batches for c in b]
    assert [c["source"] for c in clips] == [json.loads(good["json"])["image"]["file_name"]]
    # The bad JPEG and the bad JSON ride on the next clip; the truncated tar after it is
    # counted too, but no clip follows to carry it in this finite stream.
    assert clips[0]["skipped"] == 2


def _rank_main(rank, world, port, root, out_dir, resampled):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    root = Path(root)
    if resampled:
        loader = MixedLoader(data_cfg(root, num_workers=2), steps_per_epoch=6)
        record = [(b.metadata["dataset"], b.frames.shape[1]) for b in loader]
    else:
        cfg = data_cfg(root, num_workers=2, resampled=False)
        record = []
        for d in cfg.datasets:
            d.batch_size = 1
            loader = torch.utils.data.DataLoader(clip_pipeline(d, cfg), batch_size=None, num_workers=2)
            record += [c["source"] for batch in loader for c in batch]
    gathered = [None] * world
    dist.all_gather_object(gathered, record)
    if rank == 0:
        torch.save(gathered, os.path.join(out_dir, "gathered.pt"))
    dist.destroy_process_group()


@pytest.fixture
def port():
    return free_port()


@pytest.mark.slow
def test_two_ranks_two_workers_get_equal_batches(shards, tmp_path, port):
    mp.spawn(_rank_main, args=(2, port, str(shards), str(tmp_path), True), nprocs=2, join=True)
    rank0, rank1 = torch.load(tmp_path / "gathered.pt")
    assert len(rank0) == len(rank1) == 6
    # The same dataset (so the same batch shape) at every step on both ranks.
    assert rank0 == rank1


@pytest.mark.slow
def test_non_resampled_mode_sees_every_sample_once(shards, tmp_path, port):
    mp.spawn(_rank_main, args=(2, port, str(shards), str(tmp_path), False), nprocs=2, join=True)
    rank0, rank1 = torch.load(tmp_path / "gathered.pt")
    everything = rank0 + rank1
    expected = [f"sav_{i:06d}" for i in range(1, 5)] + [f"sa_{i}.jpg" for i in range(1, 9)]
    assert sorted(everything) == sorted(expected)


def test_restored_loader_continues_the_stream(shards):
    """One sample per shard and no shuffle buffer: the restored stream is exactly the rest of
    the uninterrupted one."""
    cfg = data_cfg(shards, num_workers=2)
    full = MixedLoader(cfg, steps_per_epoch=12)
    uninterrupted = [(b.metadata["dataset"], b.metadata["sources"]) for b in full]

    first = MixedLoader(cfg, steps_per_epoch=12)
    it = iter(first)
    head = [(b.metadata["dataset"], b.metadata["sources"]) for _, b in zip(range(5), it)]
    state = json.loads(json.dumps(first.state_dict()))  # it must survive a checkpoint file
    resumed = MixedLoader(cfg, steps_per_epoch=12, state=state)
    tail = [(b.metadata["dataset"], b.metadata["sources"]) for b in resumed]
    assert head == uninterrupted[:5]
    assert len(tail) == 7
    assert tail == uninterrupted[5:]


def test_restore_refuses_another_seed(shards):
    state = MixedLoader(data_cfg(shards), 3).state_dict()
    with pytest.raises(ValueError, match="cannot continue"):
        MixedLoader(data_cfg(shards, seed=1), 3, state=state)


def test_ledger_counts_each_sample_once_and_unions_ranks():
    a, b = Ledger(), Ledger()
    for index in range(3):
        a.record(0, index, last=index == 2)  # draw 0: three samples, all consumed
    a.record(2, 0, last=False)
    b.record(1, 1, last=True)  # draw 1: its last sample (index 1) only
    b.record(2, 1, last=False)
    assert a.frontier == 1 and a.taken == {2: {0}}
    assert list(a.pending(limit=4)) == [1, 2, 3]
    both = Ledger.union([a.state_dict(), json.loads(json.dumps(b.state_dict()))])
    assert both.frontier == 1 and both.taken == {1: {1}, 2: {0, 1}} and both.sizes == {1: 2}
    both.record(1, 0, last=False)  # draw 1 now complete: the frontier moves past it
    assert both.frontier == 2 and both.taken_in(2) == {0, 1} and list(both.pending(limit=4)) == [2, 3]


def _epoch_rank(rank, world, port, cfg, phase, state_file, out_file, batches):
    """Phase "stop": take `batches` batches, then save the (gathered) loader state. Phase "drain":
    restore that state on this world size and read everything this rank is dealt."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    if phase == "stop":
        loader = MixedLoader(cfg, steps_per_epoch=100)
        sources = [s for _, b in zip(range(batches), loader) for s in b.metadata["sources"]]
        state = loader.state_dict()
        if rank == 0:
            torch.save(state, state_file)
    else:
        loader = MixedLoader(cfg, steps_per_epoch=100, state=torch.load(state_file))
        (d,) = cfg.datasets
        pipeline = clip_pipeline(d, cfg, epoch=loader.epoch, layout=loader.layouts[d.name], ledger=loader.ledgers[d.name])
        batches = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=cfg.num_workers)
        sources = [c["source"] for batch in batches for c in batch]
    gathered = [None] * world
    dist.all_gather_object(gathered, sources)
    if rank == 0:
        torch.save(gathered, out_file)
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("worlds", [(2, 3), (2, 1)])
def test_another_world_size_continues_an_epoch_without_repeats_or_gaps(worlds, tmp_path, port):
    """Shards of three samples, each read once (an epoch-based stream): 2 ranks stop with shards
    half read; 3 ranks (or 1) take over. Every sample of the epoch is consumed exactly once."""
    root = tmp_path / "data"
    write_synthetic_dataset(root / "raw", num_videos=0, num_images=24, num_heldout=0, size=(64, 48), seed=3)
    plans = plan_shards(find_sa1b_items(root / "raw/sa1b"), 3)
    run_shards(plans, root / "sa1b", Sa1bSource(), workers=1, progress=False)
    everything = [f"sa_{i}.jpg" for i in range(1, 25)]
    before, after = worlds
    consumed = []
    for world, workers, phase in ((before, 2, "stop"), (after, 1, "drain")):
        cfg = DataConfig(
            datasets=[DatasetConfig("sa1b", str(root / "sa1b/shard-*.tar"), "image", batch_size=2, num_frames=1)],
            resolution=32,
            num_workers=workers,
            shuffle_buffer=1,
            resampled=False,
        )
        args = (world, free_port(), cfg, phase, str(tmp_path / "state.pt"), str(tmp_path / "sources.pt"), 2)
        mp.spawn(_epoch_rank, args=args, nprocs=world, join=True)
        consumed += [s for rank in torch.load(tmp_path / "sources.pt") for s in rank]
        if phase == "stop":
            assert len(consumed) == before * 2 * 2  # 2 batches of 2 per rank: shards cut mid-way
            state = torch.load(tmp_path / "state.pt")
            assert state["datasets"]["sa1b"]["ledger"]["taken"], "no shard was left half read"
    assert Counter(consumed) == Counter(everything)


def test_collate_rejects_mixed_lengths():
    clip = lambda t: {
        "frames": torch.zeros(t, 3, 8, 8),
        "masks": torch.zeros(t, 1, 8, 8, dtype=torch.bool),
        "source": "s",
        "object_ids": [1],
        "frame_indices": list(range(t)),
    }  # noqa: E731
    with pytest.raises(ValueError, match="different lengths"):
        collate_clips([clip(2), clip(3)])


def test_copies_from_pageable_memory_are_synchronous():
    """`non_blocking` only for pinned tensors: an asynchronous copy from pageable memory gives no
    overlap and, on some devices, a race with the host reusing the memory. `meta` stands for the
    accelerator: the copies' arguments are what is checked."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from sam2_scale.data.batch import Batch

    class Copies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.non_blocking = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default:
                self.non_blocking.append(bool((kwargs or {}).get("non_blocking", False)))
            return func(*args, **(kwargs or {}))

    batch = Batch.from_clip(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 1, 8, 8))
    with Copies() as copies:
        moved = batch.to("meta", non_blocking=True)
    assert moved.frames.device.type == moved.masks.device.type == moved.obj_to_frame_idx.device.type == "meta"
    assert copies.non_blocking == [False, False, False], copies.non_blocking
