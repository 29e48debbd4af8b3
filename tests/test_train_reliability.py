"""The trainer under the failures an adversarial user (or a cluster) produces, run for real:
a dataset that can never give a clip, stop signals to torchrun and at the last step, exit
statuses through torchrun, checkpoints that would run code when unpickled, checkpoints of
another run, and overrides placed after --resume."""

import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from tiny_run import ROOT, train, trainer_env, write_config

from sam2_scale.config import DataConfig, DatasetConfig
from sam2_scale.data.mixing import MixedLoader
from sam2_scale.data.streams import NoClipsError
from sam2_scale.train.preemption import EXIT_NONFINITE, EXIT_PREEMPTED

# Real training runs, clusters or the whole demo: the full tier only (`make test`).
pytestmark = pytest.mark.slow

MODEL_BUILT = "parameters), strategy"  # the trainer's first line after the model and engine exist


def export(tmp_path, checkpoint, output, *args):
    return subprocess.run(
        [sys.executable, "-m", "sam2_scale.train.export", str(checkpoint), str(output), *args],
        cwd=ROOT,
        env=trainer_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def latest_step(out_dir):
    pointer = out_dir / "checkpoints/latest"
    return int(pointer.read_text().strip().split("_")[1]) if pointer.is_file() else -1


def steps_logged(out_dir):
    metrics = out_dir / "metrics.jsonl"
    return sum('"loss/core"' in line for line in metrics.read_text().splitlines()) if metrics.is_file() else 0


def wait_until(predicate, proc, timeout=240, what="the condition"):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited with {proc.returncode} before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def processes_with(text):
    """Pids of live processes whose command line contains `text` (our unique config path)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry))
    return pids


def kill_leftovers(config):
    for pid in processes_with(str(config)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- 1. a dataset that can never give a clip stops the run, naming it ---------------------------


def damaged_shards(tmp_path):
    folder = tmp_path / "damaged"
    folder.mkdir()
    for i in range(3):
        (folder / f"shard-{i:06d}.tar").write_bytes(b"not a tar file" * 100)
    return folder


@pytest.mark.parametrize("case", ["too_few_frames", "damaged_shards"])
def test_a_dataset_that_gives_no_clip_stops_the_run_naming_it(case, training_shards, tmp_path):
    """It used to skip forever: no step, no log line, 100 % CPU."""
    if case == "too_few_frames":  # the synthetic videos have 6 annotated frames
        pattern = str(training_shards / "sav/shard-*.tar")
        reason = "SkipSample: 6 annotated frames < 8"
    else:
        pattern = str(damaged_shards(tmp_path) / "shard-*.tar")
        reason = "ReadError"
    dataset = {"name": "sav", "shards": pattern, "kind": "video", "batch_size": 1, "num_frames": 8}
    config = write_config(tmp_path / "c.yaml", training_shards, tmp_path / "run", data={"datasets": [dataset], "num_workers": 1})
    start = time.time()
    try:
        result = train(tmp_path, config, timeout=180)  # a regression hangs: the timeout fails the test
    finally:
        kill_leftovers(config)  # a hung loader worker outlives its killed rank
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert time.time() - start < 120
    message = result.stderr.strip().splitlines()[-1]
    assert "[train] error:" in message and "dataset 'sav'" in message and pattern in message, message
    assert "inputs in a row (data.max_skipped_in_a_row)" in message and f"x {reason}" in message, message


def test_dry_run_builds_everything_writes_nothing_and_finds_a_dataset_that_cannot_work(training_shards, tmp_path):
    config = write_config(tmp_path / "c.yaml", training_shards, tmp_path / "run")
    result = train(tmp_path, config, "--dry-run", timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "sav: first batch of 1 clip(s) x 3 frame(s)" in result.stdout, result.stdout
    assert "sa1b: first batch of 2 clip(s) x 1 frame(s)" in result.stdout, result.stdout
    assert "dry run: everything builds" in result.stdout and not (tmp_path / "run").exists()
    # 8-frame clips from videos of 6 annotated frames: the stream gives none, and says why.
    eight = {"name": "sav", "shards": str(training_shards / "sav/shard-*.tar"), "kind": "video", "num_frames": 8}
    data = {"datasets": [eight], "max_skipped_in_a_row": 20}
    config = write_config(tmp_path / "c.yaml", training_shards, tmp_path / "run", data=data)
    result = train(tmp_path, config, "--dry-run", timeout=180)
    assert result.returncode == 1 and "SkipSample: 6 annotated frames < 8" in result.stderr, result.stderr[-3000:]
    # A model.init_checkpoint that is not there (stage 2 before stage 1 has run): one line naming it.
    missing = tmp_path / "stage1/sam2.1_hiera_tiny.pt"
    result = train(tmp_path, config, "--dry-run", f"model.init_checkpoint={missing}", timeout=180)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"[train] error: model.init_checkpoint: cannot read checkpoint {missing}" in result.stderr, result.stderr[-3000:]


def test_shards_without_samples_stop_the_stream_too(tmp_path):
    """Empty tars raise no error at all: the stream used to draw them again and again, forever."""
    for i in range(2):
        tarfile.open(tmp_path / f"shard-{i:06d}.tar", "w").close()
    dataset = DatasetConfig("empty", str(tmp_path / "shard-*.tar"), kind="video", num_frames=2)
    cfg = DataConfig(datasets=[dataset], resolution=64, num_workers=0, shuffle_buffer=1, max_skipped_in_a_row=50)
    with fails_after(60), pytest.raises(NoClipsError, match=r"dataset 'empty' .* 50 inputs in a row .*reasons: 50 x EmptyShard"):
        next(iter(MixedLoader(cfg, steps_per_epoch=10)))


@contextlib.contextmanager
def fails_after(seconds):
    """A regression that loops forever fails the test instead of hanging it."""

    def timeout(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_skipped_samples_are_on_the_log_line(training_shards, tmp_path):
    """Some damaged shards among good ones: training goes on and the log line counts the skips."""
    mixed = tmp_path / "mixed"
    shutil.copytree(training_shards / "sav", mixed)
    for i in range(4):
        (mixed / f"shard-9{i:05d}.tar").write_bytes(b"not a tar file" * 100)
    dataset = {"name": "sav", "shards": str(mixed / "shard-*.tar"), "kind": "video", "batch_size": 1, "num_frames": 3}
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", training_shards, out, data={"datasets": [dataset]}, optim={"total_steps": 3})
    result = train(tmp_path, config)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    skipped = int(records[-1]["data/skipped_samples"])
    assert skipped > 0
    (last_line,) = [line for line in result.stdout.splitlines() if line.startswith("step 3/3 |")]
    assert last_line.endswith(f"| {skipped} samples skipped"), last_line


# -- 7 and 8: refused early with a clear message --------------------------------------------------


def test_overrides_are_accepted_before_and_after_resume(training_shards, tmp_path):
    """`--config X key=value --resume none key=value` used to stop at argparse (unrecognized
    arguments); now both overrides are applied, and the one after --resume is validated."""
    config = write_config(tmp_path / "c.yaml", training_shards, tmp_path / "run")
    result = train(tmp_path, config, "model.size=tiny", "--resume", "none", "train.log_every=0", timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "unrecognized arguments" not in result.stderr
    assert "train.log_every: must be >= 1, got 0" in result.stderr
    assert MODEL_BUILT not in result.stdout


def fake_checkpoint(out_dir, meta_text):
    step = out_dir / "checkpoints/step_00000002"
    (step / "trainer").mkdir(parents=True)
    (step / "meta.json").write_text(meta_text)
    (out_dir / "checkpoints/latest").write_text(step.name)
    return step


@pytest.mark.parametrize("case", ["other_strategy", "corrupt_meta"])
def test_a_checkpoint_this_run_cannot_use_is_refused_before_the_model_is_built(case, training_shards, tmp_path):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", training_shards, out, train={"strategy": "ddp"})
    if case == "other_strategy":
        step = fake_checkpoint(out, json.dumps({"step": 2, "strategy": "deepspeed", "world_size": 1, "config": {}}))
        expected = f"{step} was written under train.strategy=deepspeed, this run uses ddp"
    else:
        step = fake_checkpoint(out, '{"step": 2, "strat')
        expected = f"{step / 'meta.json'} is damaged"
    result = train(tmp_path, config, "--resume", "auto", timeout=120)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert expected in result.stderr, result.stderr[-3000:]
    assert MODEL_BUILT not in result.stdout


# -- 8: a stop signal during the last step: the run is complete, exit 0 --------------------------


def test_stop_signal_during_the_last_step_exits_0(training_shards, tmp_path):
    """A run whose only step is the last one gets SIGUSR1 while it trains: it used to exit 75, so
    a finished job was requeued once."""
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", training_shards, out, optim={"total_steps": 1, "warmup_steps": 0})
    proc = subprocess.Popen(
        [sys.executable, "-m", "sam2_scale.train", "--config", str(config)],
        cwd=ROOT,
        env=trainer_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:  # the handlers are installed before this line is printed
            lines.append(line)
            if line.startswith("[train] global batch of"):
                proc.send_signal(signal.SIGUSR1)
                break
        lines += proc.stdout.readlines()
        code = proc.wait(timeout=240)
    finally:
        proc.kill()
    log = "".join(lines)
    assert code == 0, log[-3000:]
    assert "stop signal during the last step: the run is complete; exit 0" in log
    assert latest_step(out) == 1


# -- 6 and 8: torchrun --------------------------------------------------------------------------


def torchrun(tmp_path, config, log_name, *args, wrapper=True, new_session=False):
    launcher = ["-m", "sam2_scale.train.torchrun"] if wrapper else ["-m", "torch.distributed.run"]
    log = open(tmp_path / log_name, "w")
    return subprocess.Popen(
        [
            sys.executable,
            *launcher,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "sam2_scale.train",
            "--config",
            str(config),
            *args,
        ],
        cwd=ROOT,
        env=trainer_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )


def test_stop_signal_to_torchrun_or_its_group_reaches_the_ranks_and_torchrun_exits_75(training_shards, tmp_path):
    """torchrun used to die of SIGUSR1 and leave both ranks training without a checkpoint, and it
    exited 1 where the ranks exited 75: a job script's requeue logic never saw 75."""
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", training_shards, out, optim={"total_steps": 40}, checkpoint={"every": 0})
    try:
        # SIGUSR1 to torchrun itself.
        proc = torchrun(tmp_path, config, "a.log")
        wait_until(lambda: steps_logged(out) >= 2, proc, what="step 2")
        proc.send_signal(signal.SIGUSR1)
        code = proc.wait(timeout=240)
        log = (tmp_path / "a.log").read_text()
        assert code == EXIT_PREEMPTED, log[-4000:]
        stopped_at = latest_step(out)
        assert 2 <= stopped_at < 40 and f"stopped by SIGUSR1 at step {stopped_at}; exit 75" in log

        # SIGUSR1 to torchrun's whole process group, on the resumed run.
        proc = torchrun(tmp_path, config, "b.log", "--resume", "auto", new_session=True)
        wait_until(lambda: steps_logged(out) >= stopped_at + 2, proc, what="two more steps")
        os.killpg(proc.pid, signal.SIGUSR1)
        code = proc.wait(timeout=240)
        log = (tmp_path / "b.log").read_text()
        assert code == EXIT_PREEMPTED, log[-4000:]
        assert f"resumed from {out / 'checkpoints'}/step_{stopped_at:08d}" in log
        assert stopped_at < latest_step(out) < 40 and "stopped by SIGUSR1" in log
    finally:
        kill_leftovers(config)


def test_torchrun_exits_with_the_ranks_nonfinite_status(training_shards, tmp_path):
    config = write_config(
        tmp_path / "c.yaml",
        training_shards,
        tmp_path / "run",
        optim={"base_lr": 1e30, "vision_lr": 1e30, "total_steps": 20},
        train={"max_nonfinite_steps": 2, "log_every": 1},
        checkpoint={"every": 0},
    )
    try:
        code = torchrun(tmp_path, config, "run.log").wait(timeout=300)
    finally:
        kill_leftovers(config)
    log = (tmp_path / "run.log").read_text()
    assert code == EXIT_NONFINITE, log[-4000:]
    assert "non-finite steps in a row" in log


def test_ranks_of_a_killed_plain_torchrun_checkpoint_and_stop(training_shards, tmp_path):
    """Plain torchrun still dies of SIGUSR1 (it does not handle it); its ranks, in sessions of their
    own, no longer train on unsupervised: they checkpoint and stop."""
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", training_shards, out, optim={"total_steps": 40}, checkpoint={"every": 0})
    try:
        proc = torchrun(tmp_path, config, "run.log", wrapper=False)
        wait_until(lambda: steps_logged(out) >= 2, proc, what="step 2")
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(timeout=60) == -signal.SIGUSR1
        deadline = time.time() + 120
        while processes_with(str(config)) and time.time() < deadline:
            time.sleep(0.2)
        log = (tmp_path / "run.log").read_text()
        assert not processes_with(str(config)), "ranks still running after torchrun died:\n" + log[-3000:]
        assert 2 <= latest_step(out) < 40 and f"stopped by SIGUSR1 at step {latest_step(out)}" in log, log[-3000:]
    finally:
        kill_leftovers(config)


# -- 2. checkpoint files that would run code are refused, and nothing runs -----------------------


class CreatesFile:
    """Unpickling this calls open(path, "w"), as a crafted checkpoint could call anything."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def plant(path, marker):
    """Replace checkpoint file `path` with a crafted one that creates `marker` when unpickled."""
    if path.name == ".metadata":  # torch.distributed.checkpoint's metadata is a plain pickle
        path.write_bytes(pickle.dumps(CreatesFile(marker)))
    else:
        torch.save({"module": CreatesFile(marker)}, path)
    return marker


def assert_planting_runs_code(name, tmp_path):
    """A file planted this way does run code when unpickled without restriction: the refusals mean something."""
    path = tmp_path / "armed" / name
    path.parent.mkdir(exist_ok=True)
    probe = plant(path, tmp_path / "armed" / "created")
    if name == ".metadata":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert probe.exists()


def trained_checkpoint(training_shards, tmp_path, strategy):
    out = tmp_path / f"{strategy}_run"
    config = write_config(
        tmp_path / f"{strategy}.yaml",
        training_shards,
        out,
        train={"strategy": strategy, "ema_decay": 0.9},
        optim={"total_steps": 2, "warmup_steps": 0},
    )
    result = train(tmp_path, config)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return config, out / "checkpoints/step_00000002"


def attempt_resume_and_export(tmp_path, config, good, relative, marker_name, with_export=True):
    """Copy checkpoint `good`, plant a crafted file at `relative`, try --resume (one step more,
    into a folder of this test's) and (unless not `with_export`) export."""
    bad = tmp_path / f"bad_{marker_name}" / good.name
    shutil.copytree(good, bad)
    marker = plant(bad / relative, tmp_path / marker_name)
    more = f"optim.total_steps={int(good.name.split('_')[1]) + 1}"
    resumed = train(tmp_path, config, "--resume", str(bad), more, f"train.out_dir={tmp_path / 'resumed'}", timeout=300)
    exported = export(tmp_path, bad, tmp_path / f"{marker_name}.pt") if with_export else None
    return bad, marker, resumed, exported


def test_deepspeed_checkpoint_files_that_would_run_code_are_refused(training_shards, tmp_path):
    config, good = trained_checkpoint(training_shards, tmp_path, "deepspeed")
    assert_planting_runs_code("mp_rank_00_model_states.pt", tmp_path)

    # The untouched checkpoint exports plain tensors (no requires_grad) that load strictly.
    result = export(tmp_path, good, tmp_path / "good.pt", "--ema")
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / "good.pt", weights_only=True)["model"]
    requiring_grad = [k for k, v in state.items() if v.requires_grad]
    assert not requiring_grad, f"{len(requiring_grad)} exported tensors require grad, e.g. {requiring_grad[:3]}"

    for relative in ("engine/mp_rank_00_model_states.pt", "engine/zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        name = Path(relative).stem
        read_by_export = relative.startswith("engine/mp_rank")  # the optimizer file is never read by export
        bad, marker, resumed, exported = attempt_resume_and_export(tmp_path, config, good, relative, name, read_by_export)
        assert resumed.returncode == 1, resumed.stdout[-2000:] + resumed.stderr[-3000:]
        assert f"refusing to load {bad / relative}" in resumed.stderr and "GLOBAL io.open" in resumed.stderr
        if read_by_export:
            assert exported.returncode == 1 and f"refusing to load {bad / relative}" in exported.stderr, exported.stderr
        assert not marker.exists(), f"unpickling {relative} ran code"

    bad, marker, resumed, _ = attempt_resume_and_export(tmp_path, config, good, "trainer/rank_00000.pt", "rank_file", False)
    assert resumed.returncode == 1 and f"refusing to load {bad / 'trainer/rank_00000.pt'}" in resumed.stderr
    assert not marker.exists()


def test_dcp_checkpoint_files_that_would_run_code_are_refused(ddp_run, tmp_path):
    config, good = ddp_run / "config.yaml", ddp_run / "run/checkpoints/step_00000004"
    more = ("optim.total_steps=5", f"train.out_dir={tmp_path / 'resumed'}", "train.peak_tflops=0")  # no FLOP count: no MFU
    resumed = train(tmp_path, config, "--resume", str(good), *more)
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr[-3000:]
    assert_planting_runs_code(".metadata", tmp_path)

    bad, marker, resumed, exported = attempt_resume_and_export(tmp_path, config, good, "engine/.metadata", "metadata")
    assert resumed.returncode == 1 and f"refusing to load {bad / 'engine/.metadata'}" in resumed.stderr, resumed.stderr[-3000:]
    assert exported.returncode == 1 and f"refusing to load {bad / 'engine/.metadata'}" in exported.stderr, exported.stderr
    assert not marker.exists()

    bad, marker, resumed, _ = attempt_resume_and_export(tmp_path, config, good, "trainer/rank_00000.pt", "rank_file", False)
    assert resumed.returncode == 1 and f"refusing to load {bad / 'trainer/rank_00000.pt'}" in resumed.stderr
    assert not marker.exists()
