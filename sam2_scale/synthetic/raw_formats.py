"""The synthetic scenes (scenes.py) written in the raw formats of SA-1B, SA-V and DAVIS, as
their releases ship them, so that data_prep reads them exactly as it reads the real datasets.

Layout written by `write_synthetic_dataset(out_dir)`:

    sav/videos/sav_000001.mp4                H.264, yuv420p, 24 fps
    sav/annotations/sav_000001_manual.json   SA-V train format, every 4th frame annotated
    sav_tars/sav_000.tar                     the same files in an SA-V release tar (sav_000/...)
    sa1b/sa_1.jpg, sa1b/sa_1.json            SA-1B format (COCO RLE masks)
    sa1b_tars/sa_000000.tar                  the same files in an SA-1B-style tar
    davis/JPEGImages/heldout_000/00000.jpg   every frame
    davis/Annotations/heldout_000/00000.png  palette PNG, index = object id (1..K), every frame
    davis_per_object/JPEGImages              link to (or copy of) davis/JPEGImages
    davis_per_object/Annotations/heldout_000/000/00000.png
                                             SA-V val/test layout: 0/255 PNG per object,
                                             every 4th frame

`write_mp4` encodes any frame iterable (a scene's frames for long benchmark videos).
"""

import io
import itertools
import os
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from ..atomic import atomic_path, write_json
from ..data.rle import encode as encode_rle
from ..prep.davis import davis_palette
from .scenes import HARD, Scene, make_scene, render_image

FPS = 24
ANNOTATION_STRIDE = 4  # SA-V annotates at 6 fps, i.e. every 4th frame of the 24 fps video
JPEG_QUALITY = 90
# SA-V's masklet_size_bucket thresholds, on the mean visible area in pixels.
SMALL_AREA, LARGE_AREA = 32**2, 96**2

# Separate random streams, so that adding images does not change the videos and so on.
_STREAMS = {"sav": 0, "sa1b": 1, "heldout": 2}


def dataset_seed(seed: int, split: str, index: int) -> tuple[int, int, int]:
    """Seed of item `index` of `split` ("sav", "sa1b" or "heldout") in `write_synthetic_dataset`."""
    return (seed, _STREAMS[split], index)


def _h264_encoder() -> str:
    return "libx264" if "libx264" in av.codecs_available else "h264"


def write_mp4(path, frames: Iterable[np.ndarray], fps=FPS, crf=18, preset="veryfast") -> int:
    """Encode uint8 RGB frames (H, W, 3) as H.264 yuv420p mp4; returns the frame count.

    `frames` may be any iterable (a generator keeps memory flat for long videos). Width and
    height must be even (4:2:0 chroma). The file appears only once complete.
    """
    path = Path(path)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("write_mp4 needs at least one frame")
    height, width = first.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even width and height, got {width}x{height}")
    count = 0
    with atomic_path(path) as temp:
        with av.open(str(temp), "w", format="mp4") as container:
            stream = container.add_stream(_h264_encoder(), rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if stream.codec_context.name == "libx264":
                stream.options = {"crf": str(crf), "preset": preset}
            for frame in itertools.chain([first], frames):
                if frame.shape != first.shape:
                    raise ValueError(f"frame {count} has shape {frame.shape}, the first had {first.shape}")
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, np.uint8), format="rgb24")
                video_frame.pts = count
                container.mux(stream.encode(video_frame))
                count += 1
            container.mux(stream.encode(None))
    return count


def sav_annotation(video_id: str, rle_rows: list, num_frames: int, height: int, width: int, fps=FPS) -> dict:
    """The SA-V train `*_manual.json` record from RLE rows (annotated frames x objects)."""
    num_objects = len(rle_rows[0]) if rle_rows else 0
    areas = np.array([[mask_util.area(rle) for rle in row] for row in rle_rows], float).reshape(len(rle_rows), num_objects)
    visible = areas > 0
    mean_areas, first_seen, changes = [], [], []
    for k in range(num_objects):
        seen = np.flatnonzero(visible[:, k])
        mean_areas.append(float(areas[seen, k].mean()) if len(seen) else 0.0)
        first_seen.append(float(seen[0]) if len(seen) else 0.0)
        after_first = visible[seen[0] :, k] if len(seen) else visible[:0, k]
        changes.append(int(np.count_nonzero(after_first[1:] != after_first[:-1])))
    resolution = float(height * width)
    return {
        "video_id": video_id,
        "video_duration": num_frames / fps,
        "video_frame_count": float(num_frames),
        "video_height": float(height),
        "video_width": float(width),
        "video_resolution": resolution,
        "video_environment": "Indoor",
        "video_split": "train",
        "masklet": rle_rows,
        "masklet_id": list(range(num_objects)),
        "masklet_size_rel": [area / resolution for area in mean_areas],
        "masklet_size_abs": mean_areas,
        "masklet_size_bucket": [_size_bucket(area) for area in mean_areas],
        "masklet_visibility_changes": changes,
        "masklet_first_appeared_frame": first_seen,
        "masklet_frame_count": [len(rle_rows)] * num_objects,
        "masklet_edited_frame_count": [int(n) for n in visible.sum(axis=0)],
        "masklet_type": ["manual"] * num_objects,
        "masklet_stability_score": [None] * num_objects,
        "masklet_num": num_objects,
    }


def _size_bucket(area: float) -> str:
    return "small" if area < SMALL_AREA else "medium" if area < LARGE_AREA else "large"


def write_sav_video(sav_dir, video_id: str, scene: Scene, num_frames: int, fps=FPS) -> tuple[Path, Path]:
    """Render `scene` straight into `videos/<id>.mp4` and `annotations/<id>_manual.json`."""
    sav_dir = Path(sav_dir)
    (sav_dir / "videos").mkdir(parents=True, exist_ok=True)
    (sav_dir / "annotations").mkdir(parents=True, exist_ok=True)
    rle_rows = []

    def frames():
        for t in range(num_frames):
            frame, masks = scene.render(t)
            if t % ANNOTATION_STRIDE == 0:
                rle_rows.append([encode_rle(mask) for mask in masks])
            yield frame

    video_path = sav_dir / "videos" / f"{video_id}.mp4"
    write_mp4(video_path, frames(), fps)
    record = sav_annotation(video_id, rle_rows, num_frames, scene.height, scene.width, fps)
    annotation_path = write_json(sav_dir / "annotations" / f"{video_id}_manual.json", record)
    return video_path, annotation_path


def _save_jpeg(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb, "RGB").save(path, quality=JPEG_QUALITY)


def write_sa1b_image(
    sa1b_dir, image_id: int, image: np.ndarray, masks: np.ndarray, rng, first_annotation_id=0
) -> tuple[Path, Path]:
    """`sa_<id>.jpg` and `sa_<id>.json` in SA-1B's format; quality scores are made up."""
    sa1b_dir = Path(sa1b_dir)
    sa1b_dir.mkdir(parents=True, exist_ok=True)
    height, width = image.shape[:2]
    image_path = sa1b_dir / f"sa_{image_id}.jpg"
    _save_jpeg(image_path, image)
    annotations = []
    for k, mask in enumerate(masks):
        rle = encode_rle(mask)
        ys, xs = np.nonzero(mask)
        pick = rng.integers(len(xs))  # SA-1B's point_coords: the prompt point, inside the mask
        annotations.append(
            {
                "id": first_annotation_id + k,
                "segmentation": rle,
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "area": int(mask.sum()),
                "predicted_iou": float(rng.uniform(0.85, 1.0)),
                "stability_score": float(rng.uniform(0.9, 1.0)),
                "crop_box": [0.0, 0.0, float(width), float(height)],
                "point_coords": [[float(xs[pick]), float(ys[pick])]],
            }
        )
    record = {
        "image": {"image_id": image_id, "width": width, "height": height, "file_name": image_path.name},
        "annotations": annotations,
    }
    return image_path, write_json(sa1b_dir / f"sa_{image_id}.json", record)


def write_tar(tar_path, files, folder="") -> Path:
    """Plain tar with `files` at its top level (SA-1B's layout) or in `folder` (SA-V's); fixed
    metadata, so it is reproducible."""
    tar_path = Path(tar_path)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(tar_path) as temp, tarfile.open(temp, "w", format=tarfile.GNU_FORMAT) as tar:
        for file in files:
            data = Path(file).read_bytes()
            info = tarfile.TarInfo(f"{folder}/{Path(file).name}" if folder else Path(file).name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return tar_path


def write_heldout_video(davis_dir, per_object_dir, name: str, scene: Scene, num_frames: int) -> None:
    """Every frame as JPEG plus a DAVIS palette PNG; every 4th frame also as per-object 0/255 PNGs."""
    frames_dir = Path(davis_dir) / "JPEGImages" / name
    palette_dir = Path(davis_dir) / "Annotations" / name
    objects_dir = Path(per_object_dir) / "Annotations" / name
    # A rerun with other settings must not leave frames or objects of the previous run behind.
    for folder in (frames_dir, palette_dir, objects_dir):
        shutil.rmtree(folder, ignore_errors=True)
    object_dirs = [objects_dir / f"{k:03d}" for k in range(scene.num_objects)]
    for folder in [frames_dir, palette_dir, *object_dirs]:
        folder.mkdir(parents=True, exist_ok=True)
    palette = davis_palette()
    for t in range(num_frames):
        frame, masks = scene.render(t)
        _save_jpeg(frames_dir / f"{t:05d}.jpg", frame)
        # Masks never overlap, so a weighted sum is the label map (0 = background).
        labels = np.tensordot(np.arange(1, scene.num_objects + 1, dtype=np.uint8), masks.astype(np.uint8), axes=1)
        indexed = Image.fromarray(labels.astype(np.uint8), "P")
        indexed.putpalette(palette)
        indexed.save(palette_dir / f"{t:05d}.png")
        if t % ANNOTATION_STRIDE == 0:
            for folder, mask in zip(object_dirs, masks):
                Image.fromarray(mask.astype(np.uint8) * 255, "L").save(folder / f"{t:05d}.png")


def _link_or_copy(target: Path, link: Path) -> None:
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    try:
        link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
    except OSError:  # no symlinks on this filesystem
        shutil.copytree(target, link)


def write_synthetic_dataset(
    out_dir, num_videos=2, num_images=4, num_heldout=2, num_frames=48, size=(320, 240), seed=0, style=HARD
) -> dict:
    """Write all layouts (see the module docstring) under `out_dir`; returns paths and counts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sav_videos, sav_annotations, num_masklets = [], [], 0
    for index in range(num_videos):
        scene = make_scene(size, num_frames, dataset_seed(seed, "sav", index), style=style)
        video, annotation = write_sav_video(out_dir / "sav", f"sav_{index + 1:06d}", scene, num_frames)
        sav_videos.append(video)
        sav_annotations.append(annotation)
        num_masklets += scene.num_objects

    sav_files = [f for pair in zip(sav_videos, sav_annotations) for f in pair]
    sav_tar = write_tar(out_dir / "sav_tars" / "sav_000.tar", sav_files, folder="sav_000") if sav_files else None

    sa1b_files, num_sa1b_masks = [], 0
    for index in range(num_images):
        rng = np.random.default_rng(dataset_seed(seed, "sa1b", index))
        image, masks = render_image(size, rng, style=style)
        sa1b_files += write_sa1b_image(out_dir / "sa1b", index + 1, image, masks, rng, first_annotation_id=num_sa1b_masks)
        num_sa1b_masks += len(masks)
    sa1b_tar = write_tar(out_dir / "sa1b_tars" / "sa_000000.tar", sa1b_files) if sa1b_files else None

    heldout_names = [f"heldout_{index:03d}" for index in range(num_heldout)]
    davis_dir, per_object_dir = out_dir / "davis", out_dir / "davis_per_object"
    for index, name in enumerate(heldout_names):
        scene = make_scene(size, num_frames, dataset_seed(seed, "heldout", index), style=style)
        write_heldout_video(davis_dir, per_object_dir, name, scene, num_frames)
    if heldout_names:
        _link_or_copy(davis_dir / "JPEGImages", per_object_dir / "JPEGImages")

    return {
        "out_dir": out_dir,
        "sav_videos": sav_videos,
        "sav_annotations": sav_annotations,
        "sav_tar": sav_tar,
        "sa1b_images": sa1b_files[0::2],
        "sa1b_annotations": sa1b_files[1::2],
        "sa1b_tar": sa1b_tar,
        "davis_dir": davis_dir if heldout_names else None,
        "davis_per_object_dir": per_object_dir if heldout_names else None,
        "heldout_videos": heldout_names,
        "num_frames": num_frames,
        "size": tuple(size),
        "seed": seed,
        "num_sav_masklets": num_masklets,
        "num_sa1b_masks": num_sa1b_masks,
    }
