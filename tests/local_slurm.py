"""A real SLURM cluster on this machine for tests, via launch/local_slurm/{setup,teardown}.sh."""

import os
import socket
import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "launch" / "local_slurm"


class ClusterUnavailable(RuntimeError):
    """setup.sh could not bring the cluster up; str() is its reason, fit for pytest.skip."""


def _ports_free(base, count):
    for port in range(base, base + count):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                return False
    return True


def start_cluster(state_dir, nodes=1, **env):
    """Starts (or reuses) the cluster under state_dir and returns the environment for its clients.

    Extra keyword arguments are environment variables for setup.sh, e.g. SLURM_LOCAL_GPUS=8.
    Without SLURM_LOCAL_PORT the first free ports from 6817 on are used, so a cluster someone
    else runs on this machine does not make the tests fail.
    """
    # Variables of an enclosing SLURM job would leak into sbatch/srun and confuse them.
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    setup_env = {**base, "SLURM_LOCAL_NODES": str(nodes), **{k: str(v) for k, v in env.items()}}
    if "SLURM_LOCAL_PORT" not in setup_env:
        port = next((p for p in range(6817, 7817, 10) if _ports_free(p, nodes + 1)), 6817)
        setup_env["SLURM_LOCAL_PORT"] = str(port)
    try:
        proc = subprocess.run(
            ["bash", str(SCRIPTS / "setup.sh"), str(state_dir)], env=setup_env, capture_output=True, text=True, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ClusterUnavailable(f"setup.sh did not run: {e}") from e
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("setup.sh:")] or proc.stderr.splitlines()
        raise ClusterUnavailable(lines[-1] if lines else f"setup.sh exited {proc.returncode}")
    return {**base, "SLURM_CONF": str(Path(state_dir).resolve() / "slurm.conf")}


def stop_cluster(state_dir):
    subprocess.run(["bash", str(SCRIPTS / "teardown.sh"), str(state_dir), "--wipe"], timeout=120, check=False)


def sbatch_wait(args, env, cwd, timeout=120):
    """Runs `sbatch --parsable --wait ARGS`; returns (returncode, job_id), the job's exit code included."""
    cmd = ["sbatch", "--parsable", "--wait", *map(str, args)]
    with subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            job_id = out.split(";")[0].strip()
            if job_id:
                subprocess.run(["scancel", job_id], env=env, check=False)
            raise
    return proc.returncode, out.split(";")[0].strip()
