# Everything installs into a local virtual environment created on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# CPU build on the CI machines; see ../shared/docs/ENVIRONMENT.md. Override on a GPU box:
#   make TORCH_SPEC='torch==2.13.0' ...
TORCH_SPEC ?= torch==2.13.0
# Meta's implementation, installed only as the numerical oracle of the equivalence tests.
REFERENCE_SPEC ?= sam2==1.1.0

STAMP := $(VENV)/.installed
# Two pytest workers, one per core of the CI machine (PYTEST_WORKERS=N for another count); the
# tests of one xdist_group (the local SLURM clusters) run on one worker, the others where a core is free.
# glibc would hand each large tensor's memory back to the kernel when it is freed and fault it in
# again at the next allocation: the thresholds keep it in the process (40 % less system time in a
# short DeepSpeed training run).
MALLOC_KEEP := MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=268435456
PYTEST := $(MALLOC_KEEP) OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -n $${PYTEST_WORKERS:-2} --dist loadgroup

.PHONY: install demo test test-fast test-inductor lint bench clean

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install $(TORCH_SPEC)
	$(PIP) install -e '.[test]'
	# The reference ships only an sdist with an optional CUDA extension: build it without.
	SAM2_BUILD_CUDA=0 $(PIP) install --no-deps --no-build-isolation "$(REFERENCE_SPEC)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m sam2_scale.demo

test: $(STAMP)
	$(PY) -m ruff check sam2_scale tests benchmarks data_prep
	$(VENV)/bin/shellcheck -x launch/*.sh launch/local_slurm/*.sh
	$(PYTEST) -m "not inductor" --durations=25

# The edit-test loop: units, config, model parts and equivalence at the tiny size (about 40 s
# on 2 cores). `make test` adds the tests marked slow: real training runs, clusters, the demo.
test-fast: $(STAMP)
	$(PY) -m ruff check sam2_scale tests benchmarks data_prep
	$(PYTEST) -m "not slow"

# Inductor generating and compiling kernels on the CPU for every strategy (ddp and ZeRO-1/2 share
# one cold compile of the tiny model, fsdp and ZeRO-3 make their own): 10 min on one core with
# an empty inductor cache, 4.5 min with a warm one, outside `make test`'s budget.
test-inductor: $(STAMP)
	$(PYTEST) -n 0 -m inductor

lint: $(STAMP)
	$(PY) -m ruff check sam2_scale tests benchmarks data_prep
	$(VENV)/bin/shellcheck -x launch/*.sh launch/local_slurm/*.sh

# Appends new, dated sections to BENCHMARKS.md (OpenCV is needed only for the reference method).
bench: $(STAMP)
	$(PIP) install -e '.[bench]'
	$(PY) benchmarks/model_step.py --write BENCHMARKS.md
	$(PY) benchmarks/frame_extraction.py --write BENCHMARKS.md
	$(PY) benchmarks/prep_checks.py --write BENCHMARKS.md
	$(PY) benchmarks/prep_process.py --write BENCHMARKS.md README.md
	$(PY) benchmarks/input_pipeline.py --write BENCHMARKS.md
	$(PY) benchmarks/trainer_overhead.py --write BENCHMARKS.md
	$(PY) benchmarks/elastic_checkpoint.py --size tiny small --write BENCHMARKS.md
	$(PY) benchmarks/step_dispatch.py --baseline 0045972 --write BENCHMARKS.md
	$(PY) benchmarks/gpu_throughput.py $$(nvidia-smi -L >/dev/null 2>&1 || echo --toy) --write BENCHMARKS.md

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
