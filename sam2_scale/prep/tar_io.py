"""WebDataset shards as plain tars, written and read with the standard library only.

A shard is a tar whose members `<key>.<ext>` are grouped by key (see `sam2_scale.data.schema`);
nothing more is needed to write or check one, so data preparation needs neither torch nor
the `webdataset` package (whose import loads torch). Members carry fixed metadata (mtime 0,
mode 0444, no owner), so the same samples always give the same bytes.
"""

import io
import posixpath
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass


def add_member(tar, name, data):
    """Append the bytes `data` to the open tar `tar` as the regular file `name`."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def split_key(name):
    """(key, ext) of a member name: the extension starts at the first dot of the base name."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext


def iter_samples(path):
    """Yield each sample of a shard as {"__key__": key, ext: bytes, ...}, in tar order.

    Members of one sample must be consecutive, as the trainer's reader (WebDataset) requires;
    the same key coming back later starts a new sample, which `verify` then reports."""
    sample = None
    with tarfile.open(path, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = split_key(member.name)
            if sample is not None and key != sample["__key__"]:
                yield sample
                sample = None
            if sample is None:
                sample = {"__key__": key}
            sample[ext] = tar.extractfile(member).read()
    if sample is not None:
        yield sample


@dataclass(frozen=True)
class InputFile:
    """An input file, or a member of an uncompressed tar read in place (never unpacked)."""

    path: str
    member: str | None = None  # the member's name inside the tar at `path`
    offset: int = 0  # of the member's data in the tar
    size: int = 0

    @property
    def where(self):
        return self.path if self.member is None else f"{self.path}:{self.member}"

    @contextmanager
    def open(self):
        """A binary file object positioned at the start of the file (or member)."""
        if self.member is None:
            with open(self.path, "rb") as f:
                yield f
            return
        with tarfile.open(self.path, mode="r:") as tar:
            info = tarfile.TarInfo(self.member)
            info.offset_data, info.size = self.offset, self.size
            yield tar.extractfile(info)

    def read(self):
        with self.open() as f:
            return f.read()


def index_tar(path):
    """([InputFile] of every regular member, error or None) of an uncompressed tar, from its
    headers alone: the data of each member is skipped by seeking, so indexing a tar of videos
    costs one small read per member. A damaged tar gives the members before the damage and the
    error."""
    members = []
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if info.isfile():
                    members.append(InputFile(str(path), info.name, info.offset_data, info.size))
    except (tarfile.TarError, OSError, EOFError) as exc:
        return members, f"{path}: unreadable tar ({type(exc).__name__}: {exc}; a compressed tar must be decompressed first)"
    return members, None
