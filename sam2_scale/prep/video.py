"""Stream-decode a video and JPEG-encode only the frames that are kept.

Kept frames are encoded straight from the decoder's YUV 4:2:0 planes (libjpeg-turbo through
simplejpeg), skipping the YUV -> RGB -> YCbCr round trip. JPEG stores full-range BT.601 YCbCr,
while video is usually limited range: the planes are expanded to full range first, or the
frames would come out washed out. Video with another matrix (BT.709, most HD footage) or pixel format
takes the RGB path, or its hues would shift. Frames larger than `max_side` are scaled in the
same FFmpeg call (area averaging). Decoded frames are never accumulated.
"""

from dataclasses import dataclass

import av
import numpy as np
import simplejpeg

from .resize import fitted_size

# FFmpeg's AVColorSpace / AVColorRange codes (as PyAV reports them). Unspecified matrices are
# decoded as BT.601 by FFmpeg, so that is the reference look for them.
BT601_LIKE = {2, 5, 6}  # unspecified, BT.470BG, SMPTE 170M
FULL_RANGE = 2


class VideoDecodeError(RuntimeError):
    pass


@dataclass
class KeptFrame:
    index: int  # frame number in the video, from 0
    jpeg: bytes
    height: int  # of the stored JPEG
    width: int
    original_height: int  # of the decoded frame
    original_width: int


def planes_fit_jpeg(frame):
    """Whether the frame's YUV planes can go into a JPEG as they are, up to a range lookup:
    4:2:0 with the BT.601 matrix (JPEG's). Other matrices (BT.709 HD video) take the RGB path,
    whose conversion FFmpeg does in optimised code."""
    return frame.format.name == "yuv420p" and frame.colorspace in BT601_LIKE


def _plane(frame, i, height, width):
    plane = frame.planes[i]
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width]


def encode_frame_jpeg(frame, quality, size=None):
    """JPEG bytes of a decoded `av.VideoFrame`, scaled to `size` (height, width) if given."""
    scale = {}
    if size is not None and tuple(size) != (frame.height, frame.width):
        scale = {"height": size[0], "width": size[1], "interpolation": "AREA"}
    if planes_fit_jpeg(frame):
        if frame.color_range != FULL_RANGE or scale:
            # Limited (16..235) to full range: FFmpeg's scaler does it faster than a NumPy lookup.
            src_range = "JPEG" if frame.color_range == FULL_RANGE else "MPEG"
            frame = frame.reformat(format="yuv420p", src_color_range=src_range, dst_color_range="JPEG", threads=1, **scale)
        h, w = frame.height, frame.width
        y = _plane(frame, 0, h, w)
        u = _plane(frame, 1, (h + 1) // 2, (w + 1) // 2)
        v = _plane(frame, 2, (h + 1) // 2, (w + 1) // 2)
        y, u, v = (np.ascontiguousarray(p) for p in (y, u, v))
        return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)
    rgb = frame.to_ndarray(format="rgb24", **scale)
    return simplejpeg.encode_jpeg(rgb, quality=quality, colorspace="RGB", colorsubsampling="420")


def iter_kept_frames(video, every=4, quality=90, last_index=None, threads=True, max_side=0, name=None):
    """Yield `KeptFrame`s for frames 0, every, 2*every, ... (up to `last_index` if given).

    `video` is a path or a binary file object (e.g. a member of a tar, read in place); `name`
    names it in errors. Decoding is sequential (seeking is far slower for dense sampling);
    frames that are not kept are decoded but never converted. Frames with a long side above
    `max_side` (0: no limit) are scaled down. Raises VideoDecodeError naming the video on any
    failure.
    """
    path = name or video
    try:
        container = av.open(video if hasattr(video, "read") else str(video))
    except (av.FFmpegError, OSError) as exc:
        raise VideoDecodeError(f"{path}: cannot open video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        else:  # exactly one core, e.g. one process per core
            stream.codec_context.thread_count = 1
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % every == 0:
                    h, w = fitted_size(frame.height, frame.width, max_side)
                    yield KeptFrame(index, encode_frame_jpeg(frame, quality, (h, w)), h, w, frame.height, frame.width)
                if last_index is not None and index >= last_index:
                    break
        except av.FFmpegError as exc:
            raise VideoDecodeError(f"{path}: decoding failed after frame {index}: {exc}") from exc


def video_info(path):
    """(frame count as stored in the container or None, fps, height, width)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = stream.frames or None
            return frames, float(stream.average_rate or 0) or None, stream.codec_context.height, stream.codec_context.width
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise VideoDecodeError(f"{path}: cannot open video: {exc}") from exc
