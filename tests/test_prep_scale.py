"""data_prep at dataset scale: no torch in prep processes, SA-V straight from its release tars
(read in place, identical to the loose-folder build), damaged tars, job-array splitting of
tar inputs, and resizing at prep time for video."""

import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from sam2_scale.data import rle as rle_utils
from sam2_scale.data import schema
from sam2_scale.prep.tar_io import iter_samples
from sam2_scale.prep.verify import verify_shards
from sam2_scale.synthetic import write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
MAKE = [sys.executable, str(ROOT / "data_prep" / "make_shards.py")]
PREP_MODULES = sorted(f"sam2_scale.prep.{p.stem}" for p in (ROOT / "sam2_scale" / "prep").glob("*.py") if p.stem != "__init__")


def make_shards(*args, python_flags=()):
    command = [sys.executable, *python_flags, *MAKE[1:], *[str(a) for a in args], "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"make_shards failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result


def shard_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("shard-*.tar"))}


def samples(folder):
    return {s["__key__"]: s for tar in sorted(Path(folder).glob("shard-*.tar")) for s in iter_samples(tar)}


def failures(folder):
    return json.loads((Path(folder) / "manifest.json").read_text())["failures"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    write_synthetic_dataset(root, num_videos=3, num_images=2, num_heldout=1, num_frames=16, seed=5)
    return root


def test_prep_modules_import_no_torch():
    code = "import importlib, sys\n"
    code += "".join(f"importlib.import_module({m!r})\n" for m in PREP_MODULES)
    code += "print(sorted(m for m in ('torch', 'webdataset') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"prep imports {result.stdout.strip()}"


def test_make_shards_processes_import_no_torch(raw, tmp_path):
    """The whole command, its spawned workers included (they inherit `-X importtime`)."""
    run = make_shards(
        "sav",
        "--src",
        raw / "sav_tars",
        "--out",
        tmp_path / "out",
        "--items-per-shard",
        1,
        "--workers",
        2,
        python_flags=("-X", "importtime"),
    )
    imported = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", run.stderr, flags=re.M)
    assert imported.count("sam2_scale.prep.sav") >= 2, "the workers' imports were not seen"  # parent + workers
    loaded = {name.split(".")[0] for name in imported}
    assert not loaded & {"torch", "webdataset"}, sorted(loaded & {"torch", "webdataset"})
    assert verify_shards(tmp_path / "out", progress=False)[1] == []


def test_sav_tars_give_the_shards_of_the_loose_folder(raw, tmp_path):
    loose, tarred = tmp_path / "loose", tmp_path / "tarred"
    make_shards(
        "sav",
        "--videos",
        raw / "sav/videos",
        "--annotations",
        raw / "sav/annotations",
        "--out",
        loose,
        "--items-per-shard",
        2,
        "--workers",
        1,
    )
    make_shards("sav", "--src", raw / "sav_tars", "--out", tarred, "--items-per-shard", 2, "--workers", 2)
    built = shard_bytes(tarred)
    assert list(built) == ["shard-000000.tar", "shard-000001.tar"]
    assert built == shard_bytes(loose)
    report, problems = verify_shards(tarred, progress=False)
    assert problems == [] and report["samples"] == 3


def test_shards_never_span_two_tars_and_array_tasks_split_them(raw, tmp_path):
    """Release tars of 1 + 2 videos, 2 videos per shard: {1} and {2, 3} (a folder would give
    {1, 2} and {3}); two array tasks build disjoint halves equal to the one-task build."""
    src = tmp_path / "src"
    src.mkdir()
    with tarfile.open(raw / "sav_tars/sav_000.tar") as tar:
        members = [m for m in tar if m.isfile()]
        parts = {"sav_000.tar": members[:2], "sav_001.tar": members[2:]}
        for name, chosen in parts.items():
            with tarfile.open(src / name, "w") as out:
                for m in chosen:
                    out.addfile(m, tar.extractfile(m))
    whole = tmp_path / "whole"
    make_shards("sav", "--src", src, "--out", whole, "--items-per-shard", 2, "--workers", 1)
    keys = [[s["__key__"] for s in iter_samples(tar)] for tar in sorted(whole.glob("*.tar"))]
    assert keys == [["sav_000001"], ["sav_000002", "sav_000003"]]
    split = tmp_path / "split"
    for task in (0, 1):
        make_shards(
            "sav", "--src", src, "--out", split, "--items-per-shard", 2, "--workers", 1, "--num-tasks", 2, "--task-id", task
        )
    assert shard_bytes(split) == shard_bytes(whole)
    assert json.loads((split / "manifest.json").read_text())["complete"]


def _with_auto(raw, folder):
    """A copy of the release tar with an _auto.json beside each video (the manual masklets
    again, under other ids), as SA-V ships most videos."""
    src = folder / "src"
    src.mkdir()
    with tarfile.open(raw / "sav_tars/sav_000.tar") as tar, tarfile.open(src / "sav_000.tar", "w") as out:
        for m in tar:
            data = tar.extractfile(m).read()
            out.addfile(m, io.BytesIO(data))
            if m.name.endswith("_manual.json"):
                record = json.loads(data)
                record["masklet_id"] = [100 + i for i in range(len(record["masklet_id"]))]
                auto = json.dumps(record).encode()
                info = tarfile.TarInfo(m.name.replace("_manual", "_auto"))
                info.size = len(auto)
                out.addfile(info, io.BytesIO(auto))
    return src


def test_include_auto_from_tars(raw, tmp_path):
    src = _with_auto(raw, tmp_path)
    make_shards("sav", "--src", src, "--out", tmp_path / "out", "--include-auto", "--workers", 1)
    meta = json.loads(samples(tmp_path / "out")["sav_000001"]["json"])
    manual = json.loads((raw / "sav/annotations/sav_000001_manual.json").read_text())
    count = len(manual["masklet_id"])
    assert meta["object_ids"] == manual["masklet_id"] + [1_000_100 + i for i in range(count)]
    assert meta["extra"]["object_types"] == ["manual"] * count + ["auto"] * count
    assert [row[count:] for row in meta["masks"]] == manual["masklet"]


def test_damaged_tar_keeps_what_precedes_the_damage(raw, tmp_path):
    """A tar cut short inside its last video: the videos before it are sharded, the cut video
    and the tar's damage are recorded, the run finishes."""
    src = tmp_path / "src"
    src.mkdir()
    data = (raw / "sav_tars/sav_000.tar").read_bytes()
    with tarfile.open(raw / "sav_tars/sav_000.tar") as tar:
        last_video = [m for m in tar if m.name.endswith("sav_000003.mp4")][0]
    (src / "sav_000.tar").write_bytes(data[: last_video.offset_data + last_video.size // 2])
    result = subprocess.run(
        MAKE + ["sav", "--src", str(src), "--out", str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True
    )
    assert result.returncode == 3, result.stderr  # too many failures for the default rate, reported
    assert sorted(samples(tmp_path / "out")) == ["sav_000001", "sav_000002"]
    reasons = " | ".join(f["reason"] for f in failures(tmp_path / "out"))
    assert "sav_000.tar" in reasons and "unreadable tar" in reasons
    assert verify_shards(tmp_path / "out", progress=False)[1] == []


def test_duplicate_names_and_videoless_annotations_are_recorded(raw, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("sav_000.tar", "sav_001.tar"):
        (src / name).write_bytes((raw / "sav_tars/sav_000.tar").read_bytes())
    with tarfile.open(src / "sav_002.tar", "w") as tar:  # an annotation file without its video
        tar.add(raw / "sav/annotations/sav_000001_manual.json", arcname="sav_002/sav_000009_manual.json")
    make_shards("sav", "--src", src, "--out", tmp_path / "out", "--workers", 1, "--max-failure-rate", 1)
    assert sorted(samples(tmp_path / "out")) == ["sav_000001", "sav_000002", "sav_000003"]
    reasons = [f["reason"] for f in failures(tmp_path / "out")]
    assert len(reasons) == 4 and all("sav_001.tar" in r and "comes first" in r for r in reasons[:3])
    assert reasons[3].endswith("sav_002.tar:sav_002/sav_000009_manual.json: annotations without their video sav_000009.mp4")


def _nearest(mask, height, width):
    return np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((width, height), Image.NEAREST)).astype(bool)


@pytest.mark.parametrize("kind", ["sav", "davis"])
def test_max_side_scales_video_frames_and_masks_together(raw, tmp_path, kind):
    if kind == "sav":
        args = ["sav", "--src", raw / "sav_tars"]
        key = "sav_000001"
    else:
        args = ["davis", "--frames", raw / "davis/JPEGImages", "--masks", raw / "davis/Annotations"]
        key = "heldout_000"
    make_shards(*args, "--out", tmp_path / "full", "--workers", 1)
    make_shards(*args, "--out", tmp_path / "small", "--workers", 1, "--max-side", 160)
    assert verify_shards(tmp_path / "small", progress=False)[1] == []
    full, small = samples(tmp_path / "full")[key], samples(tmp_path / "small")[key]
    full_meta, meta = json.loads(full["json"]), json.loads(small["json"])
    assert (full_meta["height"], full_meta["width"]) == (240, 320)  # the synthetic size
    assert (meta["height"], meta["width"]) == (120, 160)
    assert (meta["original_height"], meta["original_width"]) == (240, 320)
    assert (full_meta["original_height"], full_meta["original_width"]) == (240, 320)
    assert meta["frame_indices"] == full_meta["frame_indices"]
    for f, index in enumerate(meta["frame_indices"]):
        frame = simplejpeg.decode_jpeg(small[schema.frame_ext(index)], colorspace="RGB")
        assert frame.shape == (120, 160, 3)
        for o in range(len(meta["object_ids"])):
            expected = _nearest(rle_utils.decode(full_meta["masks"][f][o]), 120, 160)
            assert np.array_equal(rle_utils.decode(meta["masks"][f][o]), expected), (index, o)
    # The frames are the full-size ones, scaled: compare against a plain downscale.
    first = schema.frame_ext(meta["frame_indices"][0])
    reference = np.asarray(Image.fromarray(simplejpeg.decode_jpeg(full[first], colorspace="RGB")).resize((160, 120), Image.BOX))
    scaled = simplejpeg.decode_jpeg(small[first], colorspace="RGB")
    mse = np.mean((scaled.astype(float) - reference.astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30


def test_mask_resizing_equals_pillow_nearest():
    """Masks are resized by gathering pixels (no full-size copy); the result is Pillow's NEAREST
    exactly, for C- and Fortran-ordered masks, down and up."""
    from sam2_scale.prep.resize import resize_mask

    rng = np.random.default_rng(0)
    for height, width, new_height, new_width in [(1500, 2250, 683, 1024), (97, 131, 50, 67), (10, 10, 23, 31), (64, 48, 64, 48)]:
        mask = rng.random((height, width)) > 0.5
        expected = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((new_width, new_height), Image.NEAREST))
        for layout in (mask, np.asfortranarray(mask)):
            assert np.array_equal(resize_mask(layout, new_height, new_width), expected), (height, width, new_height, new_width)
