"""Checkpoints in Meta's format: a torch file holding {"model": state_dict, ...}."""

import torch

from ..atomic import atomic_path


class CheckpointFileError(RuntimeError):
    """A checkpoint file that is missing, unreadable, or not in Meta's format."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose tensors do not fit the model; lists every difference."""

    def __init__(self, path, missing, unexpected, mismatched):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        lines = [f"checkpoint {path} does not match the model:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
        if mismatched:
            lines.append(
                f"  shape mismatches ({len(mismatched)}): "
                + ", ".join(f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched)
            )
        super().__init__("\n".join(lines))


def read_state_dict(path):
    """The "model" state dict of a checkpoint file, loaded without executing code."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointFileError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or not isinstance(ckpt["model"], dict):
        raise CheckpointFileError(f"checkpoint {path} is not in SAM 2 format: expected a dict with a 'model' state dict")
    return ckpt["model"]


def check_state_dict(model, state_dict, path="<state dict>"):
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, state_dict[k].shape, expected[k].shape)
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(path, missing, unexpected, mismatched)


def load_checkpoint(model, path):
    """Load a Meta-format checkpoint strictly into `model`; raises CheckpointMismatchError."""
    state_dict = read_state_dict(path)
    check_state_dict(model, state_dict, path)
    model.load_state_dict(state_dict, strict=True)
    return model


def atomic_torch_save(obj, path):
    """torch.save to a temp file in the same folder, then rename: readers never see a partial file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def save_checkpoint(model, path, **extra):
    """Write {"model": state_dict, **extra} atomically."""
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save({"model": state_dict, **extra}, path)
