"""The model weights of a training checkpoint, whatever strategy and world size wrote it, as one
state dict in Meta's key order, read in one process without a GPU and without building an
engine. Optimizer state is never loaded; nothing is unpickled beyond plain data (safe_load.py)."""

from pathlib import Path

import torch

from ..model import build_sam2
from ..model.checkpoint_io import check_state_dict
from .layout import DCP_METADATA, ENGINE_DIR, read_meta
from .safe_load import dcp_load, deepspeed_globals, read_dcp_metadata, torch_load, weights_only_loads

DEEPSPEED_MODEL_STATES = "mp_rank_00_model_states.pt"  # DeepSpeed's module state, with our EMA as client state


def _dcp_entries(engine_dir, prefix):
    """Tensors under `prefix` of a torch.distributed.checkpoint folder, loaded in this process."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = read_dcp_metadata(engine_dir)
    wanted = {
        key[len(prefix) :]: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if key.startswith(prefix) and isinstance(meta, TensorStorageMetadata)
    }
    if not wanted:
        return {}
    state = {prefix.rstrip("."): wanted}
    dcp_load(state, engine_dir, no_dist=True)
    return state[prefix.rstrip(".")]


def _deepspeed_entries(step_dir):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    # The engine holds the model as `.model`: DeepSpeed's names carry that prefix. DeepSpeed
    # unpickles with weights_only=False: make every read inside weights-only.
    with weights_only_loads(step_dir / ENGINE_DIR, deepspeed_globals()):
        state = get_fp32_state_dict_from_zero_checkpoint(str(step_dir), tag=ENGINE_DIR)
    return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}


def _deepspeed_ema(step_dir):
    model_states = torch_load(step_dir / ENGINE_DIR / DEEPSPEED_MODEL_STATES, deepspeed_globals())
    return model_states.get("ema") or {}


def consolidated_state_dict(step_dir, ema=False):
    """(state_dict in Meta's key order, the run's config dict) of checkpoint folder `step_dir`;
    `ema`: the EMA weights in place of the trained ones."""
    step_dir = Path(step_dir)
    meta = read_meta(step_dir)
    model_cfg = meta["config"]["model"]
    reference = build_sam2(model_cfg["size"], image_size=model_cfg["image_size"], device="meta")
    engine_dir = step_dir / ENGINE_DIR
    if (engine_dir / DCP_METADATA).is_file():
        state = _dcp_entries(str(engine_dir), "model.")
        ema_state = _dcp_entries(str(engine_dir), "ema.") if ema else {}
    else:
        state = _deepspeed_entries(step_dir)
        ema_state = _deepspeed_ema(step_dir) if ema else {}
    if ema and not ema_state:
        raise ValueError(f"{step_dir}: no EMA weights (the run had train.ema_decay = 0)")
    state.update(ema_state)  # EMA covers the trainable weights; frozen ones and buffers stay
    # Plain tensors: DeepSpeed's fp32 partitions come back as parameters that require grad.
    state = {k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in state.items()}
    check_state_dict(reference, state, str(step_dir))
    return {k: state[k] for k in reference.state_dict()}, meta["config"]
