"""Export a training checkpoint (any strategy, any world size) as one consolidated SAM 2.1 `.pt`
in Meta's format ({"model": state_dict}), loadable by Meta's `build_sam2(ckpt_path=...)` and by
`sam2_scale.model.load_checkpoint`.

    python -m sam2_scale.train.export runs/x/checkpoints/step_00001000 sam2.1_hiera_b+.pt [--ema]

CHECKPOINT may also be a run folder or its checkpoints/ folder: the newest complete one is used.
Runs in one process without a GPU; optimizer state is never loaded. Nothing is unpickled beyond
plain data (see safe_load.py): a checkpoint file that would run code is refused.
"""

import argparse
import os
import sys
from pathlib import Path

import torch

from ..model import build_sam2
from ..model.checkpoint_io import atomic_torch_save, check_state_dict
from .checkpoint import CheckpointError, read_meta
from .safe_load import UnsafeCheckpointError, dcp_load, deepspeed_globals, read_dcp_metadata, torch_load, weights_only_loads


def find_checkpoint(path):
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if (candidate / "meta.json").is_file():
            return candidate
        pointer = candidate / "latest"
        if pointer.is_file() and (candidate / pointer.read_text().strip() / "meta.json").is_file():
            return candidate / pointer.read_text().strip()
    raise FileNotFoundError(f"{path}: no complete checkpoint (a folder with meta.json, or a `latest` pointer to one)")


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

    # TrainingStep holds the model as `.model`: DeepSpeed's names carry that prefix. DeepSpeed
    # unpickles with weights_only=False: make every read inside weights-only.
    with weights_only_loads(step_dir / "engine", deepspeed_globals()):
        state = get_fp32_state_dict_from_zero_checkpoint(str(step_dir), tag="engine")
    return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}


def _deepspeed_ema(step_dir):
    model_states = torch_load(step_dir / "engine" / "mp_rank_00_model_states.pt", deepspeed_globals())
    return model_states.get("ema") or {}


def consolidated_state_dict(step_dir, ema=False):
    """(state_dict in Meta's key order, the run's config dict) of checkpoint folder `step_dir`."""
    step_dir = Path(step_dir)
    meta = read_meta(step_dir)
    model_cfg = meta["config"]["model"]
    reference = build_sam2(model_cfg["size"], image_size=model_cfg["image_size"], device="meta")
    if meta["strategy"] == "deepspeed":
        state = _deepspeed_entries(step_dir)
        ema_state = _deepspeed_ema(step_dir) if ema else {}
    else:
        state = _dcp_entries(str(step_dir / "engine"), "model.")
        ema_state = _dcp_entries(str(step_dir / "engine"), "ema.") if ema else {}
    if ema and not ema_state:
        raise ValueError(f"{step_dir}: no EMA weights (the run had train.ema_decay = 0)")
    state.update(ema_state)  # EMA covers the trainable weights; frozen ones and buffers stay
    # Plain tensors: DeepSpeed's fp32 partitions come back as parameters that require grad.
    state = {k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in state.items()}
    check_state_dict(reference, state, str(step_dir))
    return {k: state[k] for k in reference.state_dict()}, meta["config"]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sam2_scale.train.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="a checkpoint folder (step_XXXXXXXX), a checkpoints/ folder or a run folder")
    parser.add_argument("output", help="the .pt file to write")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights (runs with train.ema_decay > 0)")
    args = parser.parse_args(argv)
    try:
        step_dir = find_checkpoint(args.checkpoint)
        state, config = consolidated_state_dict(step_dir, ema=args.ema)
    except (FileNotFoundError, CheckpointError, UnsafeCheckpointError) as exc:
        sys.exit(f"error: {exc}")
    atomic_torch_save({"model": state}, args.output)
    size = config["model"]["size"]
    print(f"{step_dir} -> {os.path.abspath(args.output)} (SAM 2.1 {size}, {len(state)} tensors{', EMA' if args.ema else ''})")


if __name__ == "__main__":
    main()
