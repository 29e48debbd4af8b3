"""Synthetic scenes with exact masks, for tests, the demo and benchmarks.

A scene is a smooth-noise background that pans slowly, with textured discs, ellipses and
rectangles that move linearly, bounce, spin, leave the frame partly and occlude each other.
`SceneStyle` sets how hard that is: `HARD` (the default) has 1-3 small, fast, striped shapes on
a busy background; `EASY` has one large, slow, nearly flat shape per video on a calm one.
Masks are computed analytically from the same shapes that paint the pixels, and hold only
the *visible* pixels of each object (draw order is depth), so they are exact for every
frame, also after lossy video or JPEG compression. Everything is deterministic from a seed.

Long or large videos: `make_scene(...)` then `iter_video` or `Scene.render(t)` frame by frame,
never holding the whole video in memory.
"""

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

SHAPE_KINDS = ("disc", "ellipse", "rect")
ASPECT_RANGE = (0.45, 1.0)  # shorter / longer semi-axis of ellipses and rectangles


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
