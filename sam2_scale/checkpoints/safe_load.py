"""Checkpoint reads that cannot run code.

Unpickling can call any importable function, so a crafted checkpoint file would run code on
every machine that resumes or exports it. Every checkpoint file this project reads goes through
here and may hold only tensors, numbers, strings, plain containers and the few types
allow-listed below:

- our own per-rank trainer state: `torch.load(weights_only=True)`;
- DeepSpeed's model and optimizer files: DeepSpeed reads them with `weights_only=False`, so its
  loads run inside `weights_only_loads`, which makes every `torch.load` weights-only whatever
  its caller asks (`TORCH_FORCE_WEIGHTS_ONLY_LOAD`) and allow-lists DeepSpeed's bookkeeping types;
- torch.distributed.checkpoint (ddp, fsdp): its `.metadata` file is a plain pickle, read here
  with an unpickler that knows only DCP's metadata classes; its non-tensor entries go through
  `torch.load(weights_only=False)` inside DCP, so `dcp.load` runs inside `weights_only_loads` too.
"""

import contextlib
import dataclasses
import enum
import os
import pickle
import re
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
import torch.distributed.checkpoint.metadata as dcp_metadata
from torch.distributed.checkpoint import FileSystemReader

FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORCE_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file holds a pickled object outside the allow-list; it was not loaded."""


def _unsupported(exc):
    """The short reason inside torch's long weights-only message, e.g. `GLOBAL posix.system`."""
    text = str(exc)
    match = re.search(r"Unsupported global: (GLOBAL \S+)", text) or re.search(r"WeightsUnpickler error: ([^\n.]+)", text)
    return match.group(1) if match else text.splitlines()[0] if text else type(exc).__name__


def refusal(what, reason):
    return UnsafeCheckpointError(
        f"refusing to load {what}: it holds a pickled object that is not plain data ({reason}); unpickling it could "
        "run arbitrary code. sam2_scale checkpoints hold only tensors, numbers, strings and containers: this file was "
        "not written by sam2_scale or has been tampered with. Resume from another checkpoint (--resume DIR)."
    )


def deepspeed_globals():
    """The non-plain types DeepSpeed ZeRO (stages 0-3) writes into its checkpoint files."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def torch_load(path, allowed=(), map_location="cpu"):
    """`torch.load(path, weights_only=True)` with `allowed` types; a refusal names the file.
    The tensors map the file instead of copying it: every rank of a node that reads a
    consolidated checkpoint shares the page cache, and reads only the pages of its own shard."""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise refusal(path, _unsupported(exc)) from None


def _files_refused(folder, allowed):
    """The .pt files under `folder` that reference a type outside the allow-list (for the message)."""
    refused = []
    with torch.serialization.safe_globals(list(allowed)):
        for path in sorted(Path(folder).rglob("*.pt")):
            try:
                if torch.serialization.get_unsafe_globals_in_checkpoint(path):
                    refused.append(str(path))
            except Exception:  # not a torch.save zip file: unreadable, so refused as well
                refused.append(str(path))
    return refused


@contextlib.contextmanager
def weights_only_loads(folder, allowed=()):
    """Inside the block every `torch.load`, including those in DeepSpeed and DCP that ask for
    weights_only=False, unpickles only plain data and `allowed`. A refusal names the files of
    `folder` that caused it."""
    saved = {key: os.environ.pop(key, None) for key in (FORCE_WEIGHTS_ONLY, FORCE_NO_WEIGHTS_ONLY)}
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        with torch.serialization.safe_globals(list(allowed)):
            yield
    except pickle.UnpicklingError as exc:
        files = _files_refused(folder, allowed)
        raise refusal(", ".join(files) if files else f"a file in {folder}", _unsupported(exc)) from None
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def _dcp_metadata_globals():
    allowed = {
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PureWindowsPath"),
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
    }
    # DCP's metadata module holds only plain dataclasses and enums.
    for name, value in vars(dcp_metadata).items():
        if isinstance(value, type) and (dataclasses.is_dataclass(value) or issubclass(value, enum.Enum)):
            if value.__module__ == dcp_metadata.__name__:
                allowed.add((dcp_metadata.__name__, name))
    return allowed


class _MetadataUnpickler(pickle.Unpickler):
    allowed = _dcp_metadata_globals()

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype | torch.layout | torch.memory_format):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name}")


class SafeFileSystemReader(FileSystemReader):
    """A DCP reader whose metadata file (a plain pickle) is read with an allow-list unpickler.
    The body is FileSystemReader.read_metadata's (torch 2.13) with the unpickler swapped."""

    def read_metadata(self, *args, **kwargs):
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as metadata_file:
            try:
                metadata = _MetadataUnpickler(metadata_file).load()
            except pickle.UnpicklingError as exc:
                raise refusal(path, str(exc)) from None
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def read_dcp_metadata(folder):
    return SafeFileSystemReader(folder).read_metadata()


def dcp_load(state, folder, planner=None, no_dist=False):
    """`dcp.load` of `folder` into `state`, reading nothing that could run code."""
    with weights_only_loads(folder):
        dcp.load(state, storage_reader=SafeFileSystemReader(folder), planner=planner, no_dist=no_dist)
