import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from tiny_run import train, write_config

from sam2_scale.prep.davis import DavisSource, find_davis_items
from sam2_scale.prep.sa1b import Sa1bSource, find_sa1b_items
from sam2_scale.prep.sav import SavSource, find_sav_items
from sam2_scale.prep.shards import plan_shards, run_shards, write_manifest
from sam2_scale.synthetic import write_synthetic_dataset

DATA = Path(__file__).parent / "data"

# Each pytest worker (`make test` runs one per core) gets its share of the cores, at most 2
# threads: the cores stay busy without oversubscription, and runs stay deterministic.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // WORKERS)))


def pytest_collection_modifyitems(items):
    """Longest work first, so that no worker is left with a long test while the other idles at the
    end: the local-SLURM group (one unit of several minutes), then the slow tests, then the rest.
    The sort is stable and the same on every worker, as xdist requires."""
    items.sort(key=lambda item: (item.get_closest_marker("xdist_group") is None, item.get_closest_marker("slow") is None))


@pytest.fixture(scope="session")
def reference_state_dicts():
    """Every state-dict key and shape of Meta's released SAM 2.1 models, per size."""
    out = {}
    for size in ("tiny", "small", "base_plus", "large"):
        out[size] = json.loads((DATA / f"sam2.1_hiera_{size}.state_dict.json").read_text())
    return out


@pytest.fixture(scope="session")
def reference_hparams():
    """The numbers of Meta's released SAM 2.1 training config."""
    return json.loads((DATA / "sam2.1_training_hparams.json").read_text())


@pytest.fixture(scope="session")
def training_shards(tmp_path_factory):
    """One sample per shard and a shuffle buffer of 1 make the data stream resume exactly."""
    root = tmp_path_factory.mktemp("trainer_data")
    write_synthetic_dataset(root / "raw", num_videos=4, num_images=8, num_heldout=2, num_frames=24, size=(128, 96), seed=0)
    for kind, name, source, items in (
        ("sav", "sav", SavSource(), find_sav_items(root / "raw/sav/videos", root / "raw/sav/annotations")),
        ("sa1b", "sa1b", Sa1bSource(), find_sa1b_items(root / "raw/sa1b")),
        ("davis", "heldout", DavisSource(), find_davis_items(root / "raw/davis/JPEGImages", root / "raw/davis/Annotations")),
    ):
        plans = plan_shards(items, 1)
        run_shards(plans, root / name, source, workers=1, progress=False)
        write_manifest(root / name, plans, kind, {})
    return root


def made_once(tmp_path_factory, name, make):
    """Folder `name`, filled by `make(folder)` once per test run, whichever pytest worker asks
    first; the others wait for it. What it holds is for reading: change only a copy."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the workers' common parent
    folder = shared / name
    with FileLock(f"{folder}.lock"):
        if not (folder / ".complete").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".complete").touch()
    return folder


@pytest.fixture(scope="session")
def ddp_run(training_shards, tmp_path_factory):
    """A finished one-process ddp run (4 steps, a checkpoint after each and the last 2 kept, EMA,
    MFU over a given peak): trained once per test run for every test that reads a ddp checkpoint.
    Holds config.yaml, run/ (the out_dir) and stdout.txt."""

    def make(folder):
        config = write_config(
            folder / "config.yaml",
            training_shards,
            folder / "run",
            optim={"total_steps": 4},
            checkpoint={"every": 1, "keep": 2},
            train={"log_every": 2, "ema_decay": 0.9, "peak_tflops": 1.0},
        )
        result = train(folder, config)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        (folder / "stdout.txt").write_text(result.stdout)

    return made_once(tmp_path_factory, "ddp_run", make)
