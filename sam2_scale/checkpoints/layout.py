"""The folder a training run checkpoints into, and how to find and trust what is in it.

    <root>/step_00001000/engine/         model + optimizer + schedule (+ EMA), written by the
                                         engine: a torch.distributed.checkpoint folder (ddp,
                                         fsdp), or DeepSpeed's own files and beside them
                                         elastic.pt, the same state consolidated
    <root>/step_00001000/trainer/rank_00003.pt   per rank: RNG states and the data position
    <root>/step_00001000/meta.json       step, strategy, world size, W&B run id, config
    <root>/latest                        name of the newest complete checkpoint

A step folder is complete once it holds meta.json: it is written last, then the folder is
renamed into place (train/checkpoint.py).
"""

import json
import re
from pathlib import Path

STEP_DIR = re.compile(r"^step_(\d{8})$")
META_FILE = "meta.json"
ENGINE_DIR = "engine"
TRAINER_DIR = "trainer"
LATEST_FILE = "latest"
ELASTIC_FILE = "elastic.pt"  # DeepSpeed only: its state with no world size in it
DCP_METADATA = ".metadata"  # present in a torch.distributed.checkpoint folder

# What a resume reads from meta.json, and its type.
META_FIELDS = {"step": int, "strategy": str, "world_size": int}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (damaged, or written by another setup)."""


def step_dir_name(step):
    return f"step_{step:08d}"


def complete_checkpoints(root):
    """Complete checkpoints (a step folder with meta.json) under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / META_FILE).is_file()]


def latest_checkpoint(root):
    """The newest complete checkpoint under `root`: the `latest` pointer if it names one, else a scan; None if none."""
    root = Path(root)
    pointer = root / LATEST_FILE
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / META_FILE).is_file():
            return candidate
    done = complete_checkpoints(root)
    return done[-1] if done else None


def find_checkpoint(path):
    """A checkpoint folder, or the newest complete one of a checkpoints/ folder or a run folder."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    for root in (path, path / "checkpoints"):
        if found := latest_checkpoint(root):
            return found
    raise FileNotFoundError(
        f"{path}: no complete checkpoint (a folder with {META_FILE}, or a run or checkpoints/ folder holding one)"
    )


def read_meta(path):
    """meta.json of checkpoint folder `path`, checked to hold what a resume needs."""
    path = Path(path)
    meta_file = path / META_FILE
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        others = [str(p) for p in complete_checkpoints(path.parent) if p.name != path.name]
        raise CheckpointError(
            f"{meta_file} is damaged ({exc}). Resume from another checkpoint with --resume DIR "
            f"({', '.join(others) if others else 'there is no other one here'}), or remove this one."
        ) from None
    missing = [key for key, kind in META_FIELDS.items() if not isinstance(meta, dict) or not isinstance(meta.get(key), kind)]
    if missing:
        raise CheckpointError(f"{meta_file} is damaged: {', '.join(missing)} missing or of the wrong type")
    return meta
