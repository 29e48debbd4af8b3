"""SA-V videos (mp4 + <video>_manual.json [+ _auto.json]) -> video samples, one per video.

One sample per whole video keeps every window of consecutive annotated frames available to
the sampler; the reader decodes only the JPEGs of the frames it picks. Videos come from a folder
or straight from SA-V's release tars, read in place (a tar is indexed from its headers and each
video streamed from its offset: nothing is unpacked, memory does not grow with the tar).
"""

import json
import math
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from sam2_scale.data import rle as rle_utils
from sam2_scale.data import schema

from .resize import resize_rle
from .shards import SampleError, Source
from .tar_io import InputFile, index_tar
from .validate import as_int, describe, require_optional_number
from .video import VideoDecodeError, iter_kept_frames

# Object ids of auto masklets are offset so they never collide with manual ones.
AUTO_ID_OFFSET = 1_000_000
_ROLES = {".mp4": "video", "_manual.json": "manual", "_auto.json": "auto"}


@dataclass(frozen=True)
class SavVideo:
    """One video to shard: its files (loose or tar members) and, for a second video of an
    already seen name, where the first one is (it is skipped: sample keys are names)."""

    stem: str
    video: InputFile
    manual: InputFile | None = None
    auto: InputFile | None = None
    duplicate_of: str | None = None


@dataclass(frozen=True)
class BadInput:
    """An input that gives no video (a damaged tar, annotations without their mp4): recorded
    as a failure of its own."""

    where: str
    reason: str


def _role(name):
    base = posixpath.basename(name)
    for suffix, role in _ROLES.items():
        if base.endswith(suffix):
            return base[: -len(suffix)], role
    return None, None


def _group_videos(files, seen):
    """SavVideos from InputFiles, sorted by name (BadInputs for annotations without a video);
    names in `seen` (name -> where) are marked as duplicates, and new names added to it."""
    by_stem, repeats = {}, []
    for f in files:
        stem, role = _role(f.member or f.path)
        if role is None:
            continue
        entry = by_stem.setdefault(stem, {})
        if role in entry:  # the same file name twice in one source: which one is meant?
            repeats.append(SavVideo(stem, f, duplicate_of=entry[role].where))
        else:
            entry[role] = f
    videos = []
    for stem in sorted(by_stem):
        entry = by_stem[stem]
        if "video" not in entry:
            where = next(iter(entry.values())).where
            videos.append(BadInput(where, f"{where}: annotations without their video {stem}.mp4"))
            continue
        first = seen.setdefault(stem, entry["video"].where)
        duplicate_of = first if first != entry["video"].where else None
        videos.append(SavVideo(stem, entry["video"], entry.get("manual"), entry.get("auto"), duplicate_of))
    return videos + repeats


def find_sav_items(videos_dir, annotations_dir=None):
    """Sorted SavVideos for every *.mp4 below `videos_dir`, annotations from `annotations_dir`."""
    videos_dir = Path(videos_dir)
    annotations_dir = Path(annotations_dir or videos_dir)
    files = sorted(videos_dir.rglob("*.mp4")) + sorted(annotations_dir.rglob("*_manual.json"))
    files += sorted(annotations_dir.rglob("*_auto.json"))
    return _group_videos([InputFile(str(p)) for p in files], {})


def find_sav_tar_items(src):
    """One list of work items per SA-V release tar below `src` (sorted by path): the tar's
    videos sorted by name, then a BadInput if the tar is damaged. A tar's videos are
    sharded together, so each shard reads one tar front to back."""
    tars = sorted(Path(src).rglob("*.tar"))
    if not tars:
        raise FileNotFoundError(f"no *.tar under {src}")
    seen, groups = {}, []
    for tar in tars:
        members, error = index_tar(tar)
        items = _group_videos(members, seen)
        if error:
            items.append(BadInput(str(tar), error))
        groups.append(items)
    return groups


def load_masklets(source, video_id):
    """(rows, object_ids, meta) of an SA-V annotation file (an InputFile), validated for shape
    and field types."""
    path = source.where
    try:
        meta = json.loads(source.read())
    except (OSError, ValueError, EOFError) as exc:
        raise SampleError(f"{path}: malformed annotation JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("masklet"), list):
        raise SampleError(f"{path}: no 'masklet' list")
    rows = meta["masklet"]
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise SampleError(f"{path}: masklet row {i} must be a list of RLEs, got {describe(row)}")
    ids = _masklet_ids(meta, rows, path)
    for i, row in enumerate(rows):
        if len(row) != len(ids):
            raise SampleError(f"{path}: masklet row {i} has {len(row)} objects, expected {len(ids)}")
    # Read later for the fps; a wrong type would crash every run on this file.
    for key in ("video_duration", "video_frame_count"):
        require_optional_number(meta, key, path)
    return rows, ids, meta


def _masklet_ids(meta, rows, path):
    """The object ids: 'masklet_id' when given (integers), else 0..K-1 from the first row."""
    ids = meta.get("masklet_id")
    if ids is None or ids == []:
        return list(range(len(rows[0]) if rows else 0))
    if not isinstance(ids, list) or any(as_int(i) is None for i in ids):
        raise SampleError(f"{path}: 'masklet_id' must be a list of integers, got {describe(ids)}")
    return [as_int(i) for i in ids]


@dataclass(frozen=True)
class SavSource(Source):
    ann_every: int = 4  # annotations at 6 fps on 24 fps video: frames 0, 4, 8, ...
    quality: int = 90
    include_auto: bool = False
    max_side: int = 0  # scale frames (and masks) down to this long side; 0 = keep
    unit: str = "videos"
    # How the work is done, not what it makes: frame-threaded decoding when cores are spare.
    threads: bool = field(default=True, metadata={"setting": False})

    def producers(self, item):
        if isinstance(item, BadInput):
            raise SampleError(item.reason)
        yield item.stem, lambda add: self._build(item, add)

    def _build(self, item, add):
        where = item.video.where
        if item.duplicate_of:
            raise SampleError(
                f"{where}: a file of the same name ({item.duplicate_of}) comes first; "
                "sample keys are video names and must be unique"
            )
        if item.manual is None:
            raise SampleError(f"{where}: no annotation file {item.stem}_manual.json")
        rows, ids, meta = load_masklets(item.manual, item.stem)
        types = ["manual"] * len(ids)
        if self.include_auto and item.auto is not None:
            auto_rows, auto_ids, _ = load_masklets(item.auto, item.stem)
            if len(auto_rows) != len(rows):
                raise SampleError(f"{item.auto.where}: {len(auto_rows)} annotated frames, manual file has {len(rows)}")
            rows = [m + a for m, a in zip(rows, auto_rows)]
            ids = ids + [AUTO_ID_OFFSET + i for i in auto_ids]
            types += ["auto"] * len(auto_ids)
        if not rows:
            raise SampleError(f"{item.manual.where}: no annotated frames")

        indices, frame = [], None
        try:
            with item.video.open() as video:
                for frame in iter_kept_frames(
                    video,
                    every=self.ann_every,
                    quality=self.quality,
                    last_index=(len(rows) - 1) * self.ann_every,
                    threads=self.threads,
                    max_side=self.max_side,
                    name=where,
                ):
                    add(schema.frame_ext(frame.index), frame.jpeg)
                    indices.append(frame.index)
        except VideoDecodeError as exc:
            raise SampleError(str(exc)) from exc
        except (OSError, EOFError) as exc:  # e.g. a tar cut short inside this video
            raise SampleError(f"{where}: unreadable: {exc}") from exc
        if len(indices) != len(rows):
            raise SampleError(
                f"{where}: {len(indices)} frames at every {self.ann_every} decoded, annotation has {len(rows)}"
                f" (video frames: {meta.get('video_frame_count')})"
            )
        original = (frame.original_height, frame.original_width)
        stored = (frame.height, frame.width)
        masks = [
            self._masks_of_frame(row, original, stored, f"{item.manual.where}: frame {i}", ids) for i, row in zip(indices, rows)
        ]
        extra = {k: meta[k] for k in ("video_environment", "video_split", "video_duration", "video_frame_count") if k in meta}
        extra["object_types"] = types
        meta_out = schema.video_meta("sav", item.stem, *stored, _fps_of(meta), indices, ids, masks, extra, original_size=original)
        add(schema.META_EXT, schema.encode_meta(meta_out))
        return schema.sample_key(item.stem), len(indices)

    @staticmethod
    def _masks_of_frame(row, original, stored, where, ids):
        """The frame's RLEs, checked against the decoded frame size and scaled to the stored one."""
        out = []
        for rle, object_id in zip(row, ids):
            if rle is not None:
                try:
                    rle_utils.check(rle, *original, f"{where} object {object_id}")
                except rle_utils.RLEError as exc:
                    raise SampleError(str(exc)) from exc
                if stored != original:
                    rle = resize_rle(rle, *stored, f"{where} object {object_id}")
            out.append(rle)
        return out


def _fps_of(meta):
    duration, count = meta.get("video_duration"), meta.get("video_frame_count")
    if duration and count and duration > 0 and count > 0:
        fps = float(count) / float(duration)
        return round(fps, 3) if math.isfinite(fps) else None
    return None
