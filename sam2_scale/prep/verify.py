"""Read every sample of a shard set back and check it against the schema and the manifest.

Every problem names where it is: `SHARD.tar:KEY ...` for a sample, the shard or the manifest
for counts and sizes."""

import json
from pathlib import Path

import simplejpeg
from tqdm import tqdm

from sam2_scale.data import rle as rle_utils
from sam2_scale.data import schema

from .tar_io import iter_samples


def _check_jpeg(data, height, width, where, problems):
    try:
        image = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except (ValueError, RuntimeError) as exc:
        problems.append(f"{where}: JPEG does not decode: {exc}")
        return
    if image.shape[:2] != (height, width):
        problems.append(f"{where}: JPEG is {image.shape[:2]}, metadata says {(height, width)}")


def _check_rle(rle, height, width, where, problems):
    try:
        rle_utils.check(rle, height, width, where)  # its messages start with `where`
    except rle_utils.RLEError as exc:
        problems.append(str(exc))
        return
    try:
        rle_utils.decode(rle)
    except rle_utils.RLEError as exc:
        problems.append(f"{where}: {exc}")


def _check_sample(check, sample, where):
    """The problems of one sample; malformed metadata is one problem, not the end of the shard."""
    if schema.META_EXT not in sample:
        return [f"{where}: no .{schema.META_EXT} file"]
    try:
        return check(sample, where)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return [f"{where}: malformed metadata: {type(exc).__name__}: {exc}"]


def check_video_sample(sample, where):
    problems = []
    meta = json.loads(sample[schema.META_EXT])
    if meta.get("schema") != schema.VIDEO_SCHEMA:
        return [f"{where}: schema {meta.get('schema')!r}, expected {schema.VIDEO_SCHEMA!r}"]
    h, w = meta["height"], meta["width"]
    frames = {schema.frame_index_of(ext): data for ext, data in sample.items() if schema.frame_index_of(ext) is not None}
    if sorted(frames) != meta["frame_indices"]:
        problems.append(f"{where}: frames {sorted(frames)} != frame_indices {meta['frame_indices']}")
    if len(meta["masks"]) != len(meta["frame_indices"]):
        problems.append(f"{where}: {len(meta['masks'])} mask rows for {len(meta['frame_indices'])} frames")
    for index, data in frames.items():
        _check_jpeg(data, h, w, f"{where} frame {index}", problems)
    for f, row in enumerate(meta["masks"]):
        if len(row) != len(meta["object_ids"]):
            problems.append(f"{where}: mask row {f} has {len(row)} objects, expected {len(meta['object_ids'])}")
        for o, rle in enumerate(row):
            if rle is not None:
                _check_rle(rle, h, w, f"{where} frame {meta['frame_indices'][f]} object {o}", problems)
    return problems


def check_image_sample(sample, where):
    problems = []
    meta = json.loads(sample[schema.META_EXT])
    if meta.get("schema") != schema.IMAGE_SCHEMA:
        return [f"{where}: schema {meta.get('schema')!r}, expected {schema.IMAGE_SCHEMA!r}"]
    h, w = meta["image"]["height"], meta["image"]["width"]
    if schema.IMAGE_EXT not in sample:
        return [f"{where}: no .{schema.IMAGE_EXT} file"]
    _check_jpeg(sample[schema.IMAGE_EXT], h, w, where, problems)
    for i, ann in enumerate(meta["annotations"]):
        _check_rle(ann["segmentation"], h, w, f"{where} annotation {i}", problems)
    return problems


def verify_shards(folder, progress=True):
    """Returns (report dict, list of problems); no problems means the shard set is sound."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return {}, [f"{manifest_path}: missing (run make_shards.py first)"]
    manifest = json.loads(manifest_path.read_text())
    problems = []
    if not manifest["complete"]:
        problems.append(f"{manifest_path}: only {manifest['num_shards']} of {manifest['num_shards_planned']} shards are finished")
    check = check_video_sample if manifest["kind"] in ("sav", "davis") else check_image_sample
    totals = {"samples": 0, "frames": 0}
    for shard in tqdm(manifest["shards"], unit="shards", disable=not progress, desc=f"verify {folder}"):
        path = folder / shard["name"]
        if not path.exists():
            problems.append(f"{path}: listed in the manifest but missing")
            continue
        if path.stat().st_size != shard["size"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, manifest says {shard['size']}")
        keys, frames = [], 0
        try:
            for sample in iter_samples(path):
                where = f"{path.name}:{sample['__key__']}"
                keys.append(sample["__key__"])
                problems += _check_sample(check, sample, where)
                frames += sum(schema.frame_index_of(ext) is not None for ext in sample) if check is check_video_sample else 1
        except Exception as exc:  # a damaged tar: report, keep verifying the others
            problems.append(f"{path}: unreadable after {len(keys)} samples: {type(exc).__name__}: {exc}")
        if keys != shard["keys"]:
            problems.append(f"{path}: sample keys differ from the manifest ({len(keys)} read, {len(shard['keys'])} listed)")
        if frames != shard["frames"]:
            problems.append(f"{path}: {frames} frames read, manifest says {shard['frames']}")
        totals["samples"] += len(keys)
        totals["frames"] += frames
    for key in ("samples", "frames"):
        if totals[key] != manifest[key]:
            problems.append(f"{manifest_path}: {totals[key]} {key} read, manifest says {manifest[key]}")
    return {"kind": manifest["kind"], **totals, "shards": len(manifest["shards"]), "failed_inputs": manifest["failed"]}, problems
