"""Atomic file writes, the one way every part of the package writes a file that others read: the
content goes to a temporary file beside the target, is flushed to disk, and replaces the target
by a rename. A reader, a rerun or a restarted job sees the old file or the new one, never a part.
"""

import contextlib
import json
import os
import secrets
from pathlib import Path


def temp_beside(path):
    """A new name next to `path`: unique, because tasks of a job array share folders; hidden,
    so globs of finished files (shard-*.tar) never match it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def temps_of(path):
    """Temporary files of `path` left by writers that were killed."""
    path = Path(path)
    return path.parent.glob(f".{path.name}.*.tmp")


def fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write; when the block ends without an error the file is synced
    and renamed over `path`, otherwise it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text):
    return write_bytes(path, text.encode())


def write_json(path, obj):
    return write_text(path, json.dumps(obj, indent=1))
