import json
import os
from pathlib import Path

import pytest
import torch

from sam2_scale.prep.davis import DavisSource, find_davis_items
from sam2_scale.prep.sa1b import Sa1bSource, find_sa1b_items
from sam2_scale.prep.sav import SavSource, find_sav_items
from sam2_scale.prep.shards import plan_shards, run_shards, write_manifest
from sam2_scale.synthetic import write_synthetic_dataset

DATA = Path(__file__).parent / "data"

# Two cores: keep intra-op threads to what the machine has, and runs deterministic.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
