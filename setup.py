from setuptools import find_packages, setup

setup(
    name="sam2_scale",
    version="0.1.0",
    description="Pretraining SAM 2.1 (Segment Anything 2.1) from scratch at cluster scale",
    packages=find_packages(include=["sam2_scale", "sam2_scale.*"]),
    python_requires=">=3.10",
    # torch is pinned by the Makefile (a CPU build on CI machines); any recent torch works here.
    install_requires=["torch>=2.5", "numpy", "pyyaml"],
    extras_require={
        # hydra-core, iopath, pillow and tqdm are what Meta's reference implementation imports; it is
        # installed by `make` (see Makefile) and used only as a numerical oracle in tests.
        "test": ["pytest>=8", "ruff", "hydra-core>=1.3.2", "iopath>=0.1.10", "pillow", "tqdm"],
    },
)
