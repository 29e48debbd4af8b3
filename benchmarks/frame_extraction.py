"""SA-V frame extraction: keep every 4th frame of a 24 fps H.264 video and write it as JPEG.

Three ways of doing the same job are measured on the same synthetic videos, each run in its
own process so that its peak memory (max RSS) is its own:

  (a) ours    `sam2_scale.prep.video.iter_kept_frames(every=4, quality=90)`, each JPEG written
              to a file;
  (b) OpenCV  the reference SA-V extraction: `cv2.VideoCapture` reads every frame into a
              list (BGR), then `cv2.imwrite` writes frames[::4] (default JPEG quality 95);
  (c) floor   threaded PyAV decode of every frame, and the kept frames' raw YUV planes
              straight into libjpeg-turbo, with no colour conversion at all.

CPU time is user + sys of the extraction itself (interpreter start-up and imports excluded;
the whole process's CPU is reported too), per kept frame. Output quality is the lowest PSNR,
over a few kept frames, of the decoded JPEGs against PyAV's RGB decode of the same frames.
Scaling runs 1 and 2 processes of (a) at once, each on its own copy of the shortest video,
with and without frame threads, next to a control whose workers use one thread each.

Test videos (1280x720 H.264 yuv420p 24 fps by default) are textured shapes moving over a
detailed, panning background; they are rendered once and cached (rendering is never timed).
Besides untagged videos (decoded as BT.601 limited range, like the project's synthetic
data), a BT.709-tagged copy of the shortest one exercises the BT.709 path of (a).

    python benchmarks/frame_extraction.py                       # 10 s and 60 s videos
    python benchmarks/frame_extraction.py --seconds 2 --repeats 1 --width 640 --height 360
    python benchmarks/frame_extraction.py --write BENCHMARKS.md # append the section

OpenCV is needed for (b) only: `pip install opencv-python-headless`.
"""

import argparse
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import add_run  # benchmarks/report.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FPS = 24
EVERY = 4
QUALITY = 90
PSNR_FRAMES = 5  # kept frames checked per run, spread over the video
OPENCV_RSS_LIMIT = 6e9  # bytes of decoded frames above which (b) is not run
START_GRACE_S = 3.0  # concurrent workers start together this long after launch, imports done
VIDEO_VERSION = 1  # bump when the rendering below changes, to invalidate cached videos

# (mode, threads) -> row label of the scaling table
SCALING_ROWS = {
    ("ours", True): "(a), `threads=True` (frame + slice threads)",
    ("ours", False): "(a), `threads=False` (one decoder thread)",
    ("floor", False): "control: (c) with one decoder thread",
}

METHODS = {
    "ours": "(a) ours: `iter_kept_frames`",
    "opencv": "(b) OpenCV: all frames in a list, `imwrite`",
    "floor": "(c) floor: decode + raw planes to JPEG",
}


# ---------------------------------------------------------------------------------------------
# Test videos


def _fine_detail(rng, height, width):
    """float32 (H, W, 3): upsampled noise at 5-20 px scales, like foliage or fabric, not grain."""
    from PIL import Image

    detail = np.zeros((height, width, 3), np.float32)
    for cell_px, amplitude in ((20, 14.0), (6, 7.0)):
        grid = rng.integers(0, 256, (max(2, height // cell_px), max(2, width // cell_px), 3), dtype=np.uint8)
        upsampled = Image.fromarray(grid, "RGB").resize((width, height), Image.BICUBIC)
        detail += (np.asarray(upsampled, np.float32) - 127.5) * (amplitude / 127.5)
    return detail


def iter_test_frames(seconds, width, height, seed=0):
    """RGB uint8 frames: six textured shapes moving, spinning and occluding over a panning background."""
    from sam2_scale.synthetic import make_scene

    num_frames = round(seconds * FPS)
    scene = make_scene((width, height), num_frames, seed=seed, num_objects=6)
    # The project's scene background is very smooth; real footage has much more detail, which
    # is what H.264 and JPEG spend their bits and time on.
    rng = np.random.default_rng(seed + 1)
    background = scene.background.astype(np.float32) + _fine_detail(rng, *scene.background.shape[:2])
    scene = dataclasses.replace(scene, background=np.clip(background, 0, 255).astype(np.uint8))
    for t in range(num_frames):
        yield scene.render(t)[0]


def write_test_video(path, seconds, width, height, bt709=False):
    """H.264 (libx264, crf 18, veryfast) yuv420p mp4; BT.709 limited range tagged when `bt709`."""
    import av

    temp = path.with_name(f".{path.name}.tmp")
    with av.open(str(temp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        if bt709:
            ctx = stream.codec_context
            ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1  # AVCOL_*_BT709
            ctx.color_range = 1  # limited ("MPEG")
        for index, rgb in enumerate(iter_test_frames(seconds, width, height)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            # Convert with the matrix the stream is tagged with, so that a correct decoder
            # gets the rendered colours back.
            frame = frame.reformat(format="yuv420p", dst_colorspace="itu709" if bt709 else None)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    os.replace(temp, path)


def test_video(cache_dir, seconds, width, height, bt709=False):
    name = f"sav_like_{width}x{height}_{seconds:g}s{'_bt709' if bt709 else ''}_v{VIDEO_VERSION}.mp4"
    path = Path(cache_dir) / name
    if not path.exists():
        print(f"rendering {name} ...", file=sys.stderr, flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_test_video(path, seconds, width, height, bt709)
    return path


# ---------------------------------------------------------------------------------------------
# The three methods, run in a child process. Each factory does its imports (kept out of the
# timing) and returns extract(video, out_dir, threads) -> number of JPEG files written.


def ours():
    from sam2_scale.prep.video import iter_kept_frames

    def extract(video, out_dir, threads):
        count = 0
        for kept in iter_kept_frames(video, every=EVERY, quality=QUALITY, threads=threads):
            Path(out_dir, f"{kept.index:05d}.jpg").write_bytes(kept.jpeg)
            count += 1
        return count

    return extract


def opencv():
    try:
        import cv2
    except ImportError:
        sys.exit("(b) needs OpenCV, which is not a project dependency: .venv/bin/pip install opencv-python-headless")

    def extract(video, out_dir, threads):
        # As SA-V's extraction script: every decoded frame is kept until the video ends.
        capture = cv2.VideoCapture(str(video))
        frames = []
        while capture.isOpened():
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        capture.release()
        for index in range(0, len(frames), EVERY):
            cv2.imwrite(str(Path(out_dir, f"{index:05d}.jpg")), frames[index])
        return len(range(0, len(frames), EVERY))

    return extract


def floor():
    import av
    import simplejpeg

    def extract(video, out_dir, threads):
        count = 0
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            if threads:
                stream.thread_type = "AUTO"
            else:  # truly one thread: PyAV's default still runs slice threads
                stream.codec_context.thread_count = 1
            for index, frame in enumerate(container.decode(stream)):
                if index % EVERY:
                    continue
                planes = [_raw_plane(frame, i) for i in range(3)]
                jpeg = simplejpeg.encode_jpeg_yuv_planes(*planes, quality=QUALITY)
                Path(out_dir, f"{index:05d}.jpg").write_bytes(jpeg)
                count += 1
        return count

    return extract


def _raw_plane(frame, i):
    height = frame.height if i == 0 else (frame.height + 1) // 2
    width = frame.width if i == 0 else (frame.width + 1) // 2
    plane = frame.planes[i]
    # The decoder pads rows to its alignment; the copy only happens when it did.
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width]
    return rows if rows.flags.c_contiguous else np.ascontiguousarray(rows)


EXTRACTORS = {"ours": ours, "opencv": opencv, "floor": floor}


def child_main(args):
    """Runs one extraction; prints one JSON line with its own timing."""
    import resource

    extract = EXTRACTORS[args.mode]()
    if args.start_at:
        time.sleep(max(0.0, args.start_at - time.time()))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start, wall_start = time.time(), time.perf_counter()
    count = extract(args.video, args.out, threads=not args.no_threads)
    wall = time.perf_counter() - wall_start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    result = {"kept": count, "cpu_s": cpu, "wall_s": wall, "start": start, "end": start + wall, "rss_mib": peak_rss_mib()}
    print(json.dumps(result))


def peak_rss_mib():
    """This process's own peak resident memory.

    On Linux ru_maxrss survives fork + exec, so a child reports at least its parent's peak;
    VmHWM belongs to the process's current address space only.
    """
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# Running children


@dataclasses.dataclass
class Run:
    kept: int
    cpu_s: float  # the extraction's own user + sys time
    process_cpu_s: float  # the whole child, start-up and imports included
    wall_s: float
    rss_mib: float
    start: float
    end: float


def spawn(mode, video, out_dir, threads=True, start_at=None):
    cmd = [sys.executable, __file__, "--_child", mode, "--video", str(video), "--out", str(out_dir)]
    if not threads:
        cmd.append("--no-threads")
    if start_at:
        cmd += ["--start-at", repr(start_at)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def collect(proc):
    out = proc.stdout.read()
    # wait4 gives this child's own rusage, also while other children run at the same time.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"child {proc.args} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    return Run(
        kept=result["kept"],
        cpu_s=result["cpu_s"],
        process_cpu_s=usage.ru_utime + usage.ru_stime,
        wall_s=result["wall_s"],
        rss_mib=result["rss_mib"],
        start=result["start"],
        end=result["end"],
    )


def run_once(mode, video, tmp_dir, threads=True):
    """(Run, folder holding its JPEGs); the caller removes the folder."""
    out_dir = Path(tempfile.mkdtemp(prefix=f"{mode}_", dir=tmp_dir))
    return collect(spawn(mode, video, out_dir, threads)), out_dir


def median_run(runs):
    median = {f.name: float(np.median([getattr(r, f.name) for r in runs])) for f in dataclasses.fields(Run)}
    return Run(**{**median, "kept": runs[-1].kept})


def run_together(mode, videos, tmp_dir, threads):
    """One worker per video, all started at the same moment: (kept frames / s, cores busy)."""
    out_dirs = [Path(tempfile.mkdtemp(prefix="scaling_", dir=tmp_dir)) for _ in videos]
    start_at = time.time() + START_GRACE_S
    procs = [spawn(mode, video, out, threads, start_at) for video, out in zip(videos, out_dirs)]
    runs = [collect(proc) for proc in procs]
    for out in out_dirs:
        shutil.rmtree(out)
    wall = max(r.end for r in runs) - min(r.start for r in runs)
    return sum(r.kept for r in runs) / wall, sum(r.cpu_s for r in runs) / wall


def measure_scaling(mode, threads, video, copy, tmp_dir, repeats):
    """Medians of 1-worker rate, cores it keeps busy, 2-worker rate, and the per-repeat ratio.

    One and two workers alternate, so that load from other users of the machine hits both alike.
    """
    ones, cores, twos, ratios = [], [], [], []
    for _ in range(repeats):
        one, busy = run_together(mode, [video], tmp_dir, threads)
        two, _ = run_together(mode, [video, copy], tmp_dir, threads)
        ones.append(one)
        cores.append(busy)
        twos.append(two)
        ratios.append(two / one)
    return Scaling(*(float(np.median(x)) for x in (ones, cores, twos, ratios)))


@dataclasses.dataclass
class Scaling:
    one: float  # kept frames per second, 1 worker
    one_cores: float  # CPU seconds per wall second of that worker
    two: float  # kept frames per second, 2 workers together
    ratio: float


# ---------------------------------------------------------------------------------------------
# Output quality


def reference_frames(video, count):
    """{index: RGB uint8} of `count` kept frames spread over the video, from PyAV's own RGB conversion."""
    import av

    frames, _, _ = video_frames(video)
    kept = list(range(0, frames, EVERY))
    picks = {kept[round(i)] for i in np.linspace(0, len(kept) - 1, count)}
    reference = {}
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index in picks:
                reference[index] = frame.to_ndarray(format="rgb24")
    return reference


def min_psnr(out_dir, reference):
    import simplejpeg

    values = []
    for index, rgb in reference.items():
        path = Path(out_dir, f"{index:05d}.jpg")
        if not path.exists():
            return float("nan")
        decoded = simplejpeg.decode_jpeg(path.read_bytes(), colorspace="RGB")
        mse = np.mean((decoded.astype(np.float64) - rgb) ** 2)
        values.append(math.inf if mse == 0 else 10 * math.log10(255**2 / mse))
    return min(values)


# ---------------------------------------------------------------------------------------------
# Report


def video_frames(video):
    from sam2_scale.prep.video import video_info

    frames, _, height, width = video_info(video)
    return frames, height, width


def bitrate_mbps(video):
    import av

    with av.open(str(video)) as container:
        return container.bit_rate / 1e6


def opencv_skip_reason(video):
    if importlib.util.find_spec("cv2") is None:
        return "OpenCV missing: `.venv/bin/pip install opencv-python-headless`"
    frames, height, width = video_frames(video)
    held = (frames or 0) * height * width * 3
    if held > OPENCV_RSS_LIMIT:
        return f"skipped: would hold {held / 1e9:.1f} GB of frames"
    return None


def measure_video(label, video, args):
    """Rows of the main table for one video: {mode: (Run or skip reason, min PSNR)}.

    The methods take turns within each repeat, so that load from other users of the machine
    is spread over all of them.
    """
    reference = reference_frames(video, PSNR_FRAMES)
    reason = opencv_skip_reason(video)
    skipped = {"opencv": reason} if reason else {}
    for reason in skipped.values():
        print(f"{label}: (b) {reason}", file=sys.stderr, flush=True)
    modes = [mode for mode in METHODS if mode not in skipped]
    runs, out_dirs = {mode: [] for mode in modes}, {}
    for repeat in range(args.repeats):
        print(f"measuring {label}, repeat {repeat + 1}/{args.repeats} ...", file=sys.stderr, flush=True)
        for mode in modes:
            if mode in out_dirs:
                shutil.rmtree(out_dirs[mode])
            run, out_dirs[mode] = run_once(mode, video, args.tmp)
            runs[mode].append(run)
    rows = {}
    for mode in METHODS:
        if mode in skipped:
            rows[mode] = (skipped[mode], float("nan"))
            continue
        rows[mode] = (median_run(runs[mode]), min_psnr(out_dirs[mode], reference))
        shutil.rmtree(out_dirs[mode])
    return rows


def _ratio(value, base):
    return f"{value / base:.2f}" if base else "—"


def main_table(results):
    lines = [
        "| video | method | kept frames | CPU ms / kept frame | CPU × (b) | CPU × (c) | process CPU s | wall s "
        "| peak RSS MiB | RSS × (b) | min PSNR dB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, rows in results.items():
        runs = {mode: run for mode, (run, _) in rows.items() if isinstance(run, Run)}
        per_frame = {mode: run.cpu_s / run.kept for mode, run in runs.items()}
        for mode, (run, psnr) in rows.items():
            if not isinstance(run, Run):
                lines.append(f"| {label} | {METHODS[mode]} | — | — | — | — | — | — | — | — | {run} |")
                continue
            base_b = runs.get("opencv")
            lines.append(
                f"| {label} | {METHODS[mode]} | {run.kept} | {1000 * per_frame[mode]:.1f} "
                f"| {_ratio(per_frame[mode], per_frame.get('opencv'))} | {_ratio(per_frame[mode], per_frame.get('floor'))} "
                f"| {run.process_cpu_s:.2f} | {run.wall_s:.2f} | {run.rss_mib:.0f} "
                f"| {_ratio(run.rss_mib, base_b.rss_mib if base_b else None)} | {psnr:.1f} |"
            )
    return "\n".join(lines)


def scaling_table(scaling):
    cores = os.cpu_count()
    lines = [
        "| workers run | 1 worker: kept frames / s | cores it keeps busy | 2 workers: kept frames / s | × "
        f"| best possible × on {cores} cores |",
        "|---|---|---|---|---|---|",
    ]
    for key, s in scaling.items():
        name = SCALING_ROWS[key]
        bound = min(2.0, cores / s.one_cores)
        lines.append(f"| {name} | {s.one:.1f} | {s.one_cores:.2f} | {s.two:.1f} | {s.ratio:.2f} | {bound:.2f} |")
    return "\n".join(lines)


def _run(results, label, mode):
    run = results.get(label, {}).get(mode, (None,))[0]
    return run if isinstance(run, Run) else None


def _cpu_per_frame(run):
    return run.cpu_s / run.kept


def _cpu_targets(results, labels):
    """(vs (b) line, vs (c) line): verdicts on the untagged videos, and separately on tagged ones."""
    groups = [(labels, "untagged")] + [([label], label) for label in results if label not in labels]
    vs_b, vs_c = [], []
    for group, name in groups:
        less, above = {}, {}  # label -> CPU ratio
        for label in group:
            ours, ref, floor = (_run(results, label, m) for m in ("ours", "opencv", "floor"))
            if ref:
                less[label] = _cpu_per_frame(ref) / _cpu_per_frame(ours)
            above[label] = _cpu_per_frame(ours) / _cpu_per_frame(floor)
        psnr = min(results[label]["ours"][1] for label in group)
        if less:
            ok = min(less.values()) >= 1.25 and psnr >= 35
            vs_b.append(f"**{_met(ok)}** on {name} ({_ratios(less)}; (a) min PSNR {psnr:.1f} dB)")
        vs_c.append(f"**{_met(max(above.values()) <= 1.15)}** on {name} ({_ratios(above)})")
    return (
        "- ≥ 1.25× less CPU than (b) at PSNR ≥ 35 dB: " + ("; ".join(vs_b) or "**not measured** ((b) did not run)"),
        "- CPU within 1.15× of (c): " + "; ".join(vs_c),
    )


def _ratios(by_label):
    return ", ".join(f"{ratio:.2f}× on {label}" for label, ratio in by_label.items())


def targets(results, labels, scaling):
    """One line per performance target."""
    threaded, single, control = (scaling[key] for key in SCALING_ROWS)
    return "\n".join(
        [
            *_cpu_targets(results, labels),
            _memory_target(results, labels),
            f"- ≥ 1.8× throughput with 2 workers: **{_met(threaded.ratio >= 1.8)}** ({threaded.ratio:.2f}× with threaded "
            f"decode, {single.ratio:.2f}× with `threads=False`; one threaded worker already keeps {threaded.one_cores:.2f} "
            f"of the {os.cpu_count()} cores busy, and the single-threaded control reaches {control.ratio:.2f}×)",
        ]
    )


def _memory_target(results, labels):
    shares = []
    for label in labels:
        ours, ref = _run(results, label, "ours"), _run(results, label, "opencv")
        if ours and ref:
            shares.append((label, ours.rss_mib / ref.rss_mib))
    first, last = _run(results, labels[0], "ours"), _run(results, labels[-1], "ours")
    growth = last.rss_mib / first.rss_mib
    flat = growth <= 1.1  # "flat": under 10 % more memory for the longest video
    small = bool(shares) and max(s for _, s in shares) <= 0.2
    share_text = ", ".join(f"1/{1 / s:.0f} on {label}" for label, s in shares) or "(b) not measured"
    return (
        f"- peak memory ≤ 1/5 of (b) and flat in video length: **{_met(small and flat)}** "
        f"({share_text}; (a) {first.rss_mib:.0f} MiB on {labels[0]} vs {last.rss_mib:.0f} MiB on {labels[-1]}, ×{growth:.2f})"
    )


def _met(ok):
    return "met" if ok else "not met"


def versions():
    import av
    import simplejpeg

    parts = [f"PyAV {av.__version__} (FFmpeg {getattr(av, 'ffmpeg_version_info', '?')})", f"simplejpeg {simplejpeg.__version__}"]
    if importlib.util.find_spec("cv2") is not None:
        from importlib.metadata import version

        parts.append(f"OpenCV {version('opencv-python-headless')}")
    return ", ".join(parts)


SECTION_HEADING = "## Frame extraction (`benchmarks/frame_extraction.py`)"

INTRO = """\
Workload: keep every 4th frame of a 24 fps H.264 video (SA-V's 6 fps annotation rate) and
write it as JPEG. (a) `iter_kept_frames(every=4, quality=90)` + file writes; (b) the SA-V
reference script's method: `cv2.VideoCapture` reads every frame into a list, then
`cv2.imwrite` (quality 95) of frames[::4]; (c) the floor: threaded decode of every frame and
the raw YUV planes of kept frames into libjpeg-turbo (quality 90), no colour conversion (so
its colours are wrong for limited-range video). Test videos: six textured shapes moving over
a detailed panning background, libx264 crf 18 veryfast yuv420p; "untagged" ones decode as
BT.601 limited range, the BT.709 one is tagged BT.709 limited range. Each run is its own
process; CPU = user + sys of the extraction (start-up and imports excluded, whole process in
"process CPU s"), medians of the repeats; PSNR = lowest over a few kept frames, decoded JPEG vs
PyAV's `to_ndarray(format="rgb24")` of the same frame."""


def section(args, results, labels, scaling):
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    header = (
        f"### {args.width}×{args.height} H.264 24 fps, every 4th frame — {datetime.date.today().isoformat()} "
        f"({machine}, load average {args.load:.1f} at start, {args.load_end:.1f} at end, {versions()}; {args.repeats} repeats)"
    )
    bitrates = ", ".join(f"{label} {bitrate_mbps(video):.1f} Mb/s" for label, video in args.videos.items())
    scaling_note = (
        f"Scaling: 1 vs 2 concurrent processes, each on its own copy of the {labels[0]} video; the last column is "
        f"min(2, cores / cores one worker keeps busy), the most a second worker can add on {os.cpu_count()} cores. "
        "The control shows what this machine gives two independent one-thread workers."
    )
    return "\n\n".join(
        [
            SECTION_HEADING,
            INTRO,
            header,
            f"Test video bit rates: {bitrates}.",
            main_table(results),
            scaling_note,
            scaling_table(scaling),
            "Targets:",
            targets(results, labels, scaling),
        ]
    )


# ---------------------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 60], help="video lengths (default: 10 60)")
    parser.add_argument("--width", type=int, default=1280, help="video width (even; default 1280)")
    parser.add_argument("--height", type=int, default=720, help="video height (even; default 720)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement, medians reported (default 3)")
    parser.add_argument("--no-bt709", action="store_true", help="skip the BT.709-tagged video")
    parser.add_argument(
        "--cache", default=os.path.join(tempfile.gettempdir(), "sam2_scale_bench_videos"), help="where test videos are kept"
    )
    parser.add_argument("--tmp", default=None, help="where JPEGs are written during runs (default: the system temp dir)")
    parser.add_argument("--write", metavar="FILE", help="append the Markdown section to FILE (e.g. BENCHMARKS.md)")
    parser.add_argument("--_child", dest="mode", choices=sorted(EXTRACTORS), help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--no-threads", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.mode:
        return child_main(args)
    if args.width % 2 or args.height % 2:
        sys.exit("--width and --height must be even (yuv420p)")
    if importlib.util.find_spec("cv2") is None:
        print("OpenCV is not installed, so (b) is skipped: .venv/bin/pip install opencv-python-headless", file=sys.stderr)

    args.load = os.getloadavg()[0]  # the machine is shared: say how busy it was
    seconds = sorted(set(args.seconds))
    labels = [f"{s:g} s" for s in seconds]
    videos = {label: test_video(args.cache, s, args.width, args.height) for label, s in zip(labels, seconds)}
    if not args.no_bt709:
        videos[f"{seconds[0]:g} s BT.709"] = test_video(args.cache, seconds[0], args.width, args.height, bt709=True)

    args.videos = videos
    results = {label: measure_video(label, video, args) for label, video in videos.items()}

    copy = Path(args.cache) / f"copy_{videos[labels[0]].name}"
    shutil.copyfile(videos[labels[0]], copy)
    scaling = {}
    for key in SCALING_ROWS:
        print(f"scaling, {key} ...", file=sys.stderr, flush=True)
        scaling[key] = measure_scaling(*key, videos[labels[0]], copy, args.tmp, args.repeats)
    copy.unlink()
    args.load_end = os.getloadavg()[0]

    text = section(args, results, labels, scaling)
    print(text)
    if args.write:
        add_run(args.write, SECTION_HEADING, text)


if __name__ == "__main__":
    main()
