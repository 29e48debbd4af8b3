"""Prepare what `benchmarks/gpu_throughput.py` needs on a GPU machine that has PyTorch but no
network: Python wheels of the missing packages and the end-to-end row's shards.

Writes `.gpu/` in the repository (ignored by git; list it in `.git/info/exclude` if your checkout
does not) and prints the command to run there:

    python benchmarks/gpu_prepare.py              # here, with network
    # then on the GPU machine, from the repository root, with .gpu carried along:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
    PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_throughput.py --e2e-shards '.gpu/sav/shard-*.tar' --json out.json

The wheels are for CPython 3.12 on x86-64 Linux (the lent H200 machines' Python); the packages
are the ones those machines lack: Meta's `sam2` (built here from its sdist, without its CUDA
extension) and what its `training` package imports, and the input pipeline's readers. The
shards are synthetic SA-V videos at 1024² (so the machine needs no video decoder).

    python benchmarks/gpu_prepare.py --check      # are the wheels enough? (minutes, with network)

runs the benchmark's CPU form in a new venv holding only torch, the GPU image's packages
(DEVICE_IMAGE) and the same wheels built for this machine's Python.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Versions as the test environment pins them (see `pip freeze` in .venv).
WHEELS = [
    "hydra-core==1.3.8",
    "omegaconf==2.3.1",
    "tensordict==0.15.3",
    "pyvers==0.2.3",
    "webdataset==1.0.2",
    "braceexpand==0.1.7",
    "simplejpeg==1.9.0",
    "pycocotools==2.0.11",
]
BUILT_HERE = ["sam2==1.1.0", "antlr4-python3-runtime==4.9.3", "iopath==0.1.10"]  # sdists only: built into pure-Python wheels
# What the GPU machines' image already holds, of what the benchmark imports (the device tool's
# package list): carried again, a second version would shadow the image's.
DEVICE_IMAGE = [
    "numpy",
    "pillow",
    "pyyaml",
    "tqdm",
    "portalocker",
    "tensorboard",
    "protobuf",
    "absl-py",
    "filelock",
    "cloudpickle",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def run(cmd, **kwargs):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def download_wheels(wheels, python_version):
    wheels.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform={p}" for p in PLATFORMS]
    for spec in WHEELS:
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             f"--python-version={python_version}", "--implementation=cp", *platforms, "-d", str(wheels), spec])  # fmt: skip
    env = dict(os.environ, SAM2_BUILD_CUDA="0")
    for spec in BUILT_HERE:
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), spec], env=env)


def check_wheels():
    """Runs Meta's step and this project's, at the toy setting, in a new virtual environment that
    holds only this machine's torch, what the GPU machines' image holds (DEVICE_IMAGE), and the
    wheels this script carries (built for this machine's Python): an import that only works here
    fails the check instead of the GPU run."""
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        download_wheels(Path(tmp) / "wheels", python_version)
        venv = Path(tmp) / "venv"
        run([sys.executable, "-m", "venv", str(venv)])
        pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q"]
        run([*pip, f"torch=={torch.__version__.split('+')[0]}", *DEVICE_IMAGE])
        run([*pip, "--no-index", "--no-deps", *map(str, sorted((Path(tmp) / "wheels").glob("*.whl")))])
        toy = ["benchmarks/gpu_throughput.py", "--toy", "--phases", "meta", "ours", "--plan", "large/eager/none/1"]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        out = subprocess.run([str(venv / "bin/python"), *toy], cwd=ROOT, env=env, capture_output=True, text=True)
        print(out.stdout[-3000:], out.stderr[-3000:])
        rows = [line for line in out.stdout.splitlines() if line.startswith("{")]
        failed = [row for row in rows if '"error"' in row]
        if out.returncode or failed or len(rows) < 2:
            sys.exit(f"check failed: the benchmark does not run on the carried wheels ({failed or out.returncode})")
    print("check passed: Meta's step and this project's ran on torch, the GPU image's packages and the wheels alone")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / ".gpu"), help="folder to write (default: .gpu in the repository)")
    parser.add_argument("--videos", type=int, default=8, help="synthetic 1024² SA-V videos for the end-to-end row (default 8)")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="instead: check that the wheels are enough, by running the benchmark's CPU form in a new venv "
        "holding only torch, the GPU image's packages and the wheels (for this machine's Python; minutes)",
    )
    args = parser.parse_args()
    if args.check:
        return check_wheels()
    out = Path(args.out)
    download_wheels(out / "wheels", args.python_version)
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, "data_prep/make_synthetic.py", "--out", f"{tmp}/raw", "--videos", str(args.videos),
             "--images", "0", "--heldout", "0", "--frames", "40", "--size", "1024x1024"], cwd=ROOT)  # fmt: skip
        run([sys.executable, "data_prep/make_shards.py", "sav", "--videos", f"{tmp}/raw/sav/videos",
             "--annotations", f"{tmp}/raw/sav/annotations", "--out", str(out / "sav"), "--items-per-shard", "1",
             "--no-progress"], cwd=ROOT)  # fmt: skip
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    print(f"\n{out}: {size:.0f} MiB (a device call carries at most 64 MiB with the repository)")


if __name__ == "__main__":
    main()
