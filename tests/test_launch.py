"""The sbatch launchers under a real SLURM on this machine (launch/local_slurm/setup.sh): training
on one node and on two emulated nodes, preemption -> checkpoint -> requeue -> resume, a data-prep
job array, and a failing job's exit code. Skipped, with the reason, only when no cluster starts."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from local_slurm import ClusterUnavailable, sbatch_wait, start_cluster, stop_cluster
from tiny_run import write_config

# Real training runs, clusters or the whole demo: the full tier only (`make test`). One local
# SLURM at a time (ports, munge): every test that starts one shares a pytest worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

ROOT = Path(__file__).resolve().parents[1]
# Command-line options override the scripts' #SBATCH lines: a GPU job shrunk to this machine.
SHRUNK = ["-p", "debug", "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0", "--mem=0", "--time=00:20:00"]


def cluster(nodes):
    # munged wants every folder above its socket to be world-searchable; pytest's are 0700.
    state = Path(f"/tmp/sam2-slurm-{os.getpid()}-{nodes}n")
    try:
        env = start_cluster(state, nodes=nodes)
    except ClusterUnavailable as exc:
        stop_cluster(state)  # daemons a half-done setup started
        pytest.skip(f"no local SLURM cluster: {exc}")
    return state, env


@pytest.fixture(scope="module")
def one_node():
    state, env = cluster(1)
    yield env
    stop_cluster(state)


def job_env(cluster_env, tmp_path, config):
    return {
        **cluster_env,
        "CONFIG": str(config),
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "TMPDIR": str(tmp_path),
        "WANDB_SILENT": "true",
        "PYTHONWARNINGS": "ignore",
    }


def latest_step(out_dir):
    pointer = out_dir / "checkpoints/latest"
    return int(pointer.read_text().strip().split("_")[1]) if pointer.is_file() else -1


def job_output(tmp_path):
    return "\n".join(p.read_text() for p in sorted(tmp_path.glob("job-*.out")))


def test_pretrain_sav_trains_on_one_node(one_node, training_shards, tmp_path):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", training_shards, out, train={"strategy": "deepspeed"}, optim={"total_steps": 4})
    rc, _ = sbatch_wait(
        [*SHRUNK, "--nodes=1", f"--output={tmp_path}/job-%j.out", "launch/pretrain_sav.sh", "wandb.mode=offline"],
        job_env(one_node, tmp_path, config),
        ROOT,
        timeout=600,
    )
    log = job_output(tmp_path)
    assert rc == 0, log[-4000:]
    assert "restart 0: 1 node(s) x 2 task(s)" in log
    assert "strategy deepspeed, 2 rank(s)" in log
    assert latest_step(out) == 4
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))


def test_preemption_checkpoints_requeues_and_resumes(one_node, training_shards, tmp_path):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", training_shards, out, train={"strategy": "fsdp"}, optim={"total_steps": 12})
    env = job_env(one_node, tmp_path, config)
    args = [*SHRUNK, "--nodes=1", f"--output={tmp_path}/job-%j.out", "launch/pretrain_sav.sh"]
    submit = subprocess.Popen(["sbatch", "--parsable", "--wait", *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    job_id = submit.stdout.readline().split(";")[0].strip()
    deadline = time.time() + 300
    while latest_step(out) < 2:
        assert time.time() < deadline and submit.poll() is None, job_output(tmp_path)[-3000:]
        time.sleep(0.2)
    # What the scheduler does before preempting (or at --signal time): SIGUSR1 to the tasks.
    subprocess.run(["scancel", "--signal=USR1", job_id], env=env, check=True)
    rc = submit.wait(timeout=600)
    log = job_output(tmp_path)
    assert rc == 0, log[-4000:]
    assert "training checkpointed and stopped (exit 75): requeueing" in log
    stopped_at = int(log.split("stopped by SIGUSR1 at step ")[1].split(";")[0])
    assert "restart 1:" in log
    assert f"at step {stopped_at}" in log.split("restart 1:")[1].split("resumed from")[1].splitlines()[0]
    assert latest_step(out) == 12


def test_failing_job_returns_its_exit_code(one_node, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stratgy: fsdp\n")
    rc, _ = sbatch_wait(
        [*SHRUNK, "--nodes=1", f"--output={tmp_path}/job-%j.out", "launch/pretrain_sav.sh"],
        job_env(one_node, tmp_path, bad),
        ROOT,
        timeout=300,
    )
    assert rc != 0
    assert "train: unknown key(s) stratgy" in job_output(tmp_path)


def test_make_shards_job_array_builds_a_verified_shard_set(one_node, training_shards, tmp_path):
    """SA-V release tars, split over a two-task array, then one more task that finds nothing left."""
    out = tmp_path / "shards"
    args = ["sav", "--src", training_shards / "raw/sav_tars", "--out", out, "--items-per-shard", "1"]
    env = job_env(one_node, tmp_path, "")
    common = ["-p", "debug", "--cpus-per-task=1", "--mem-per-cpu=500M", f"--output={tmp_path}/job-%A_%a.out"]
    rc, _ = sbatch_wait([*common, "--array=0-1", "launch/make_shards.sh", *args], env, ROOT, timeout=300)
    assert rc == 0, job_output(tmp_path)
    # One more task after the array: nothing left to build, the manifest is complete.
    rc, _ = sbatch_wait([*common, "--array=0", "launch/make_shards.sh", *args], env, ROOT, timeout=300)
    assert rc == 0, job_output(tmp_path)
    result = subprocess.run([sys.executable, "data_prep/verify_shards.py", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
    assert len(list(out.glob("shard-*.tar"))) == 4


@pytest.fixture(scope="module")
def two_nodes():
    state, env = cluster(2)
    yield env
    stop_cluster(state)


def test_pretrain_sav_on_two_emulated_nodes_resumes_a_one_node_run(two_nodes, training_shards, tmp_path):
    """A run checkpointed on one node (1 rank x 2 accumulation steps) goes on as a job on two
    nodes (2 ranks x 1): the job resumes at the step and reshards."""
    out = tmp_path / "run"
    config = write_config(
        tmp_path / "c.yaml", training_shards, out, train={"strategy": "fsdp", "grad_accum_steps": 2}, optim={"total_steps": 4}
    )
    env = job_env(two_nodes, tmp_path, config)
    for nodes, steps in ((1, 2), (2, 4)):
        args = ["-p", "debug", f"--nodes={nodes}", "--ntasks-per-node=1", "--cpus-per-task=1", "--gpus-per-node=0", "--mem=0"]
        job = [*args, "--time=00:20:00", f"--output={tmp_path}/job-{nodes}n-%j.out", "launch/pretrain_sav.sh"]
        rc, _ = sbatch_wait([*job, f"checkpoint.every={steps}", f"optim.total_steps={steps}"], env, ROOT, timeout=600)
        log = job_output(tmp_path)
        assert rc == 0, log[-4000:]
        assert latest_step(out) == steps
    assert "2 node(s) x 1 task(s), master n1:" in log
    assert "written by 1 rank(s), this run has 2" in log and "gradient accumulation 2 -> 1" in log
    assert "resumed from" in log and "at step 2" in log
