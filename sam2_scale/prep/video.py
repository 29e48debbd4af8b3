"""Stream-decode a video and JPEG-encode only the frames that are kept.

Kept frames are encoded straight from the decoder's YUV 4:2:0 planes (libjpeg-turbo through
simplejpeg), skipping the YUV -> RGB -> YCbCr round trip. JPEG stores full-range BT.601 YCbCr,
while video is usually limited range and, for HD, BT.709: the planes are converted to JPEG's
range and matrix first, or the frames would come out washed out or with shifted hues.
Frames in other pixel formats take the RGB path. Decoded frames are never accumulated.
"""

from dataclasses import dataclass

import av
import numpy as np
import simplejpeg

# FFmpeg's AVColorSpace / AVColorRange codes (as PyAV reports them).
BT709, UNSPECIFIED = 1, 2
FULL_RANGE = 2

# Luma weights (Kr, Kb) of the two matrices.
_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


class VideoDecodeError(RuntimeError):
    pass


@dataclass
class KeptFrame:
    index: int  # frame number in the video, from 0
    jpeg: bytes
    height: int
    width: int


def _rgb_to_ycbcr(kr, kb):
    kg = 1 - kr - kb
    return np.array(
        [[kr, kg, kb], [-0.5 * kr / (1 - kb), -0.5 * kg / (1 - kb), 0.5], [0.5, -0.5 * kg / (1 - kr), -0.5 * kb / (1 - kr)]]
    )


def _conversion(matrix, full_range):
    """(3x3 matrix, offsets) mapping source (Y, Cb, Cr) in 0..255 to JPEG's full-range BT.601."""
    if full_range:
        scale, offset = np.diag([1.0, 1.0, 1.0]), np.array([0.0, 128.0, 128.0])
    else:  # limited range: Y in 16..235, chroma in 16..240
        scale, offset = np.diag([255 / 219, 255 / 224, 255 / 224]), np.array([16.0, 128.0, 128.0])
    to_601 = _rgb_to_ycbcr(*_KR_KB["bt601"]) @ np.linalg.inv(_rgb_to_ycbcr(*_KR_KB[matrix]))
    return to_601 @ scale, offset


class PlaneConverter:
    """Converts yuv420p planes to JPEG YCbCr; a lookup table when only the range differs."""

    def __init__(self, colorspace, color_range):
        # Unspecified matrices are decoded as BT.601 by FFmpeg, so that is the reference look.
        self.matrix = "bt709" if colorspace == BT709 else "bt601"
        self.full_range = color_range == FULL_RANGE
        self.m, self.offset = _conversion(self.matrix, self.full_range)
        self.identity = self.matrix == "bt601" and self.full_range
        if self.matrix == "bt601" and not self.full_range:
            self.y_lut = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)
            self.c_lut = np.clip(np.round((np.arange(256) - 128) * 255 / 224 + 128), 0, 255).astype(np.uint8)

    def __call__(self, y, u, v):
        if self.identity:
            return y, u, v
        if self.matrix == "bt601":
            return self.y_lut[y], self.c_lut[u], self.c_lut[v]
        yf = y.astype(np.float32) - self.offset[0]
        uf = u.astype(np.float32) - self.offset[1]
        vf = v.astype(np.float32) - self.offset[2]
        m = self.m.astype(np.float32)
        # Luma needs chroma at full resolution: nearest upsampling is enough for the small
        # cross terms of the 709 -> 601 conversion.
        h, w = y.shape
        u_full = np.repeat(np.repeat(uf, 2, axis=0), 2, axis=1)[:h, :w]
        v_full = np.repeat(np.repeat(vf, 2, axis=0), 2, axis=1)[:h, :w]
        y_out = m[0, 0] * yf + m[0, 1] * u_full + m[0, 2] * v_full
        # Chroma is computed at chroma resolution, with the luma averaged over each 2x2 block.
        y_small = _mean_2x2(yf, uf.shape)
        u_out = m[1, 0] * y_small + m[1, 1] * uf + m[1, 2] * vf + 128
        v_out = m[2, 0] * y_small + m[2, 1] * uf + m[2, 2] * vf + 128
        return _to_u8(y_out), _to_u8(u_out), _to_u8(v_out)


def _mean_2x2(plane, shape):
    h, w = plane.shape
    padded = np.pad(plane, ((0, h % 2), (0, w % 2)), mode="edge")
    return padded.reshape(shape[0], 2, shape[1], 2).mean(axis=(1, 3))


def _to_u8(x):
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _plane(frame, i, height, width):
    plane = frame.planes[i]
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width]


def encode_frame_jpeg(frame, quality, converter=None):
    """JPEG bytes of a decoded `av.VideoFrame`."""
    if frame.format.name == "yuv420p":
        converter = converter or PlaneConverter(frame.colorspace, frame.color_range)
        h, w = frame.height, frame.width
        y = _plane(frame, 0, h, w)
        u = _plane(frame, 1, (h + 1) // 2, (w + 1) // 2)
        v = _plane(frame, 2, (h + 1) // 2, (w + 1) // 2)
        y, u, v = (np.ascontiguousarray(p) for p in converter(y, u, v))
        return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)
    rgb = frame.to_ndarray(format="rgb24")
    return simplejpeg.encode_jpeg(rgb, quality=quality, colorspace="RGB", colorsubsampling="420")


def iter_kept_frames(path, every=4, quality=90, last_index=None, threads=True):
    """Yield `KeptFrame`s for frames 0, every, 2*every, ... (up to `last_index` if given).

    Decoding is sequential (seeking is far slower for dense sampling); frames that are not kept
    are decoded but never converted. Raises VideoDecodeError naming the file on any failure.
    """
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise VideoDecodeError(f"{path}: cannot open video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        converter = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                if last_index is not None and index > last_index:
                    break
                if index % every:
                    continue
                if converter is None and frame.format.name == "yuv420p":
                    converter = PlaneConverter(frame.colorspace, frame.color_range)
                yield KeptFrame(index, encode_frame_jpeg(frame, quality, converter), frame.height, frame.width)
        except av.FFmpegError as exc:
            raise VideoDecodeError(f"{path}: decoding failed after frame {index if 'index' in dir() else 0}: {exc}") from exc


def video_info(path):
    """(frame count as stored in the container or None, fps, height, width)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = stream.frames or None
            return frames, float(stream.average_rate or 0) or None, stream.codec_context.height, stream.codec_context.width
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise VideoDecodeError(f"{path}: cannot open video: {exc}") from exc
