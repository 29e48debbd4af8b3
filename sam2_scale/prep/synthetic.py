"""A small synthetic dataset in the raw formats of SA-1B, SA-V and DAVIS.

Scenes are a smooth-noise background that pans slowly, with textured discs, ellipses and
rectangles that move linearly, bounce, spin, leave the frame partly and occlude each other.
`SceneStyle` sets how hard that is: `HARD` (the default) has 1-3 small, fast, striped shapes on
a busy background; `EASY` has one large, slow, nearly flat shape per video on a calm one.
Masks are computed analytically from the same shapes that paint the pixels, and hold only
the *visible* pixels of each object (draw order is depth), so they are exact for every
frame, also after lossy video or JPEG compression. Everything is deterministic from a seed.

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

Long or large videos for benchmarks: `make_scene(...)` then `iter_video` or `Scene.render(t)`
frame by frame into `write_mp4`, which never holds the whole video in memory.
"""

import io
import itertools
import math
import os
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from sam2_scale.data.rle import encode as encode_rle

from .davis import davis_palette
from .shards import write_json_atomic

FPS = 24
ANNOTATION_STRIDE = 4  # SA-V annotates at 6 fps, i.e. every 4th frame of the 24 fps video
JPEG_QUALITY = 90
SHAPE_KINDS = ("disc", "ellipse", "rect")
ASPECT_RANGE = (0.45, 1.0)  # shorter / longer semi-axis of ellipses and rectangles
# SA-V's masklet_size_bucket thresholds, on the mean visible area in pixels.
SMALL_AREA, LARGE_AREA = 32**2, 96**2


@dataclass(frozen=True)
class SceneStyle:
    """How hard the scenes are to segment and track."""

    semi_axis_range: tuple[float, float] = (0.06, 0.2)  # the longer semi-axis, fraction of the short side
    speed_range: tuple[float, float] = (0.006, 0.02)  # fraction of the width per frame
    background_contrast: float = 0.7
    texture_amplitude: float = 30.0  # of each colour wave on a shape, per channel (0-255 scale)
    object_count_probs: tuple[float, ...] = (0.2, 0.4, 0.4)  # of 1, 2, 3, ... objects per video

    @property
    def min_semi_axis(self) -> float:
        return self.semi_axis_range[0] * ASPECT_RANGE[0]


HARD = SceneStyle()
# One big, slow, nearly flat shape per video on a calm background: what a tiny model learns to
# track within minutes on a CPU (the demo's data). Images keep several shapes.
EASY = SceneStyle(
    semi_axis_range=(0.16, 0.3),
    speed_range=(0.002, 0.008),
    background_contrast=0.3,
    texture_amplitude=12.0,
    object_count_probs=(1.0,),
)
STYLES = {"hard": HARD, "easy": EASY}

# Separate random streams, so that adding images does not change the videos and so on.
_STREAMS = {"sav": 0, "sa1b": 1, "heldout": 2}


def dataset_seed(seed: int, split: str, index: int) -> tuple[int, int, int]:
    """Seed of item `index` of `split` ("sav", "sa1b" or "heldout") in `write_synthetic_dataset`."""
    return (seed, _STREAMS[split], index)


# ---------------------------------------------------------------------------------------------
# Scene geometry


def _fold(x, low, high):
    """Reflect positions into [low, high]: linear motion becomes motion with bounces."""
    span = np.maximum(high - low, 1e-6)
    return low + span - np.abs(np.mod(x - low, 2 * span) - span)


@dataclass(frozen=True)
class MovingShape:
    kind: str  # one of SHAPE_KINDS
    semi_axes: tuple[float, float]  # (along the shape's own x axis, along its y axis), pixels
    angle: float  # orientation at t = 0, radians
    spin: float  # radians per frame
    anchor: tuple[float, float]  # (x, y) of the centre at anchor_time, before bounces
    anchor_time: float
    velocity: tuple[float, float]  # pixels per frame
    centre_low: tuple[float, float]  # the centre bounces inside [low, high]; beyond the frame
    centre_high: tuple[float, float]  # edges by part of the size, so shapes leave it partly
    base_colour: tuple[float, float, float]
    waves: tuple  # ((kx, ky, phase, (r, g, b) amplitude), ...) in the shape's own coordinates

    @property
    def bounding_radius(self) -> float:
        a, b = self.semi_axes
        return math.hypot(a, b) if self.kind == "rect" else max(a, b)

    def centre(self, t: float) -> tuple[float, float]:
        unfolded = np.asarray(self.anchor) + np.asarray(self.velocity) * (t - self.anchor_time)
        x, y = _fold(unfolded, np.asarray(self.centre_low), np.asarray(self.centre_high))
        return float(x), float(y)

    def draw(self, t: float, height: int, width: int):
        """(box, silhouette, texture) at frame t; box = (y0, y1, x0, x1) clipped to the frame.

        Only the bounding box is evaluated, so cost does not grow with the frame size.
        """
        cx, cy = self.centre(t)
        radius = self.bounding_radius
        y0, y1 = max(0, math.floor(cy - radius)), min(height, math.ceil(cy + radius) + 1)
        x0, x1 = max(0, math.floor(cx - radius)), min(width, math.ceil(cx + radius) + 1)
        if y0 >= y1 or x0 >= x1:
            return None
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        angle = self.angle + self.spin * t
        cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        u, v = dx * cos + dy * sin, dy * cos - dx * sin  # the shape's own coordinates
        a, b = self.semi_axes
        if self.kind == "rect":
            silhouette = (np.abs(u) <= a) & (np.abs(v) <= b)
        else:  # a disc is an ellipse with a == b
            silhouette = (u / a) ** 2 + (v / b) ** 2 <= 1
        texture = np.empty((y1 - y0, x1 - x0, 3), np.float32)
        texture[:] = self.base_colour
        for kx, ky, phase, amplitude in self.waves:
            texture += np.sin(kx * u + ky * v + phase)[..., None] * np.asarray(amplitude, np.float32)
        return (y0, y1, x0, x1), silhouette, texture


@dataclass(frozen=True, eq=False)  # eq would compare the background arrays ambiguously
class Scene:
    background: np.ndarray  # uint8 (H + 2 * pad, W + 2 * pad, 3), cropped with a moving offset
    pan_start: tuple[float, float]
    pan_velocity: tuple[float, float]
    height: int
    width: int
    shapes: tuple[MovingShape, ...]  # back to front

    @property
    def num_objects(self) -> int:
        return len(self.shapes)

    def _background(self, t: float) -> np.ndarray:
        pad_y = self.background.shape[0] - self.height
        pad_x = self.background.shape[1] - self.width
        offset = np.asarray(self.pan_start) + np.asarray(self.pan_velocity) * t
        oy, ox = np.rint(_fold(offset, np.zeros(2), np.array([pad_y, pad_x], float))).astype(int)
        return self.background[oy : oy + self.height, ox : ox + self.width].copy()

    def silhouettes(self, t: float) -> np.ndarray:
        """bool (K, H, W): each shape's full extent inside the frame, ignoring occlusion."""
        out = np.zeros((self.num_objects, self.height, self.width), bool)
        for k, shape in enumerate(self.shapes):
            drawn = shape.draw(t, self.height, self.width)
            if drawn is not None:
                (y0, y1, x0, x1), silhouette, _ = drawn
                out[k, y0:y1, x0:x1] = silhouette
        return out

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame t: (RGB uint8 (H, W, 3), visible masks bool (K, H, W))."""
        frame = self._background(t)
        masks = np.zeros((self.num_objects, self.height, self.width), bool)
        for k, shape in enumerate(self.shapes):
            drawn = shape.draw(t, self.height, self.width)
            if drawn is None:
                continue
            (y0, y1, x0, x1), silhouette, texture = drawn
            frame[y0:y1, x0:x1][silhouette] = np.clip(texture[silhouette], 0, 255).astype(np.uint8)
            masks[k, y0:y1, x0:x1] = silhouette
            # Painted over: the shapes behind lose these pixels.
            masks[:k, y0:y1, x0:x1] &= ~silhouette
        return frame, masks


# ---------------------------------------------------------------------------------------------
# Random scenes


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _smooth_noise(rng, height, width, contrast) -> np.ndarray:
    """uint8 (H, W, 3): a few octaves of upsampled colour noise plus a gradient."""
    canvas = np.zeros((height, width, 3), np.float32)
    longest = max(height, width)
    for cells, weight in ((3, 1.0), (9, 0.5), (28, 0.22)):
        grid_h, grid_w = max(2, round(cells * height / longest)), max(2, round(cells * width / longest))
        grid = rng.integers(0, 256, (grid_h, grid_w, 3), dtype=np.uint8)
        upsampled = Image.fromarray(grid, "RGB").resize((width, height), Image.BICUBIC)
        canvas += weight * (np.asarray(upsampled, np.float32) - 127.5)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    yy = np.linspace(-1, 1, height, dtype=np.float32)[:, None, None]
    xx = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
    canvas += (direction[0] * xx + direction[1] * yy) * rng.uniform(-40, 40, 3).astype(np.float32)
    return np.clip(128 + contrast * canvas, 10, 245).astype(np.uint8)


def _random_waves(rng, size_scale, amplitude):
    """Two sinusoidal colour waves (stripes/plaid) whose wavelength follows the shape's size."""
    waves = []
    for _ in range(2):
        wavelength = rng.uniform(0.35, 0.9) * size_scale + 6
        direction = rng.uniform(0, 2 * math.pi)
        k = 2 * math.pi / wavelength
        colour = tuple(float(a) for a in rng.uniform(-amplitude, amplitude, 3))
        waves.append((k * math.cos(direction), k * math.sin(direction), float(rng.uniform(0, 2 * math.pi)), colour))
    return tuple(waves)


def _random_shape(rng, width, height, anchor, anchor_time, style, static=False) -> MovingShape:
    short_side = min(width, height)
    kind = SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
    a = rng.uniform(*style.semi_axis_range) * short_side
    b = a if kind == "disc" else a * rng.uniform(*ASPECT_RANGE)
    speed = 0.0 if static else rng.uniform(*style.speed_range) * width
    heading = rng.uniform(0, 2 * math.pi)
    radius = math.hypot(a, b) if kind == "rect" else max(a, b)
    margin = 0.3 * radius
    return MovingShape(
        kind=kind,
        semi_axes=(float(a), float(b)),
        angle=float(rng.uniform(0, math.pi)),
        spin=0.0 if static else float(rng.uniform(-0.03, 0.03)),
        anchor=(float(anchor[0]), float(anchor[1])),
        anchor_time=float(anchor_time),
        velocity=(speed * math.cos(heading), speed * math.sin(heading)),
        centre_low=(-margin, -margin),
        centre_high=(width - 1 + margin, height - 1 + margin),
        base_colour=tuple(float(c) for c in rng.uniform(45, 210, 3)),
        waves=_random_waves(rng, a, style.texture_amplitude),
    )


def make_scene(size=(320, 240), num_frames=48, seed=0, num_objects=None, static=False, style=HARD) -> Scene:
    """A random scene of `num_objects` shapes (default: drawn from `style`), `size` = (width, height).

    Moving shapes all pass near one meeting point at one time inside the clip, so any scene
    with two or more objects has an occlusion. `static` gives still shapes at random places
    (the SA-1B images). `seed` is anything `np.random.default_rng` takes, or a Generator.
    """
    width, height = size
    rng = _rng(seed)
    if num_objects is None:
        probs = style.object_count_probs
        num_objects = int(rng.choice(len(probs), p=probs)) + 1
    meeting_point = rng.uniform([0.3 * width, 0.3 * height], [0.7 * width, 0.7 * height])
    meeting_time = rng.uniform(0.2, 0.6) * max(num_frames - 1, 0)
    shapes = []
    for _ in range(num_objects):
        if static:
            anchor = rng.uniform([0.1 * width, 0.1 * height], [0.9 * width, 0.9 * height])
        else:
            # Centres within a quarter of the smallest possible semi-axis of the meeting point:
            # at the meeting time every pair of silhouettes overlaps.
            anchor = meeting_point + rng.uniform(-0.25, 0.25, 2) * style.min_semi_axis * min(width, height)
        shapes.append(_random_shape(rng, width, height, anchor, meeting_time, style, static=static))
    # Large shapes at the back, so small ones are rarely hidden completely.
    shapes.sort(key=lambda s: -s.semi_axes[0] * s.semi_axes[1])
    pad = max(2, round(0.06 * min(width, height)))
    background = _smooth_noise(rng, height + 2 * pad, width + 2 * pad, style.background_contrast)
    pan_speed = 0.0 if static else rng.uniform(0.1, 0.4) * min(width, height) / 240
    heading = rng.uniform(0, 2 * math.pi)
    return Scene(
        background=background,
        pan_start=tuple(float(p) for p in rng.uniform(0, 2 * pad, 2)),
        pan_velocity=(pan_speed * math.sin(heading), pan_speed * math.cos(heading)),
        height=height,
        width=width,
        shapes=tuple(shapes),
    )


def iter_video(num_frames=48, size=(320, 240), seed=0, num_objects=None, style=HARD):
    """Yield (frame uint8 (H, W, 3), masks bool (K, H, W)) one frame at a time."""
    scene = make_scene(size, num_frames, seed, num_objects, style=style)
    for t in range(num_frames):
        yield scene.render(t)


def render_video(num_frames=48, size=(320, 240), seed=0, num_objects=None, style=HARD) -> tuple[np.ndarray, np.ndarray]:
    """A whole synthetic video in memory: frames uint8 (T, H, W, 3), masks bool (T, K, H, W)."""
    scene = make_scene(size, num_frames, seed, num_objects, style=style)
    width, height = size
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    masks = np.empty((num_frames, scene.num_objects, height, width), bool)
    for t in range(num_frames):
        frames[t], masks[t] = scene.render(t)
    return frames, masks


def render_image(size=(320, 240), seed=0, num_shapes=None, style=HARD) -> tuple[np.ndarray, np.ndarray]:
    """A still image with 2 to 6 shapes (default) for SA-1B: image uint8 (H, W, 3), masks bool (K, H, W).

    Every returned mask is non-empty: layouts where a shape is hidden completely are redrawn.
    """
    rng = _rng(seed)
    for _ in range(100):
        count = num_shapes if num_shapes is not None else int(rng.integers(2, 7))
        image, masks = make_scene(size, 1, rng, count, static=True, style=style).render(0)
        if masks.reshape(len(masks), -1).any(axis=1).all():
            return image, masks
    raise ValueError(f"could not place {num_shapes} shapes on a {size[0]}x{size[1]} image with all of them visible")


# ---------------------------------------------------------------------------------------------
# Writers


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


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
    temp = _temp_path(path)
    count = 0
    try:
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
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
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
    annotation_path = write_json_atomic(sav_dir / "annotations" / f"{video_id}_manual.json", record)
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
    return image_path, write_json_atomic(sa1b_dir / f"sa_{image_id}.json", record)


def write_tar(tar_path, files, folder="") -> Path:
    """Plain tar with `files` at its top level (SA-1B's layout) or in `folder` (SA-V's); fixed
    metadata, so it is reproducible."""
    tar_path = Path(tar_path)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(tar_path)
    with tarfile.open(temp, "w", format=tarfile.GNU_FORMAT) as tar:
        for file in files:
            data = Path(file).read_bytes()
            info = tarfile.TarInfo(f"{folder}/{Path(file).name}" if folder else Path(file).name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    os.replace(temp, tar_path)
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
