import json
import os
from pathlib import Path

import pytest
import torch

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
