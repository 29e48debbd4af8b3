"""atomic.py: a reader sees the old file or the new one, never a part, and no temp is left."""

import os
import stat

import pytest

from sam2_scale import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = atomic.write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError, match="writer died"), atomic.atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("writer died")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_write_replaces_the_file_readable_like_any_other(tmp_path):
    old_umask = os.umask(0o022)
    try:
        target = atomic.write_json(tmp_path / "sub" / "b.json", {"x": 1})
    finally:
        os.umask(old_umask)
    assert target.read_text() == '{\n "x": 1\n}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o644, "not a private temp file's 0600: others read these files"
    assert list(tmp_path.glob("sub/.*")) == []


def test_temps_of_a_killed_writer_are_found_for_cleanup(tmp_path):
    target = tmp_path / "shard-000000.tar"
    left = atomic.temp_beside(target)
    left.write_bytes(b"partial")
    assert list(atomic.temps_of(target)) == [left] and not list(atomic.temps_of(tmp_path / "shard-000001.tar"))
