#!/bin/bash
# Data preparation as a SLURM job array: each array task builds its own disjoint set of shards.
#
#   sbatch --array=0-63 launch/make_shards.sh sav --src /data/sav_train_tars --out /data/shards/sav --max-side 1024
#   sbatch --array=0-15 launch/make_shards.sh sa1b --src /data/sa1b_tars --out /data/shards/sa1b --max-side 1500
#
# Safe to resubmit or requeue: finished shards are skipped. Each task rewrites manifest.json
# from the shards finished so far; after the whole array has finished, one more task with
# --array=0 (e.g. --dependency=afterok:<jobid>) builds anything left and leaves a complete manifest.
# Settings: CPUS via --cpus-per-task; PYTHON (default .venv/bin/python); SAM2_SCALE_ENV, a file
# sourced first (module loads, conda activate, ...).
#SBATCH --job-name=sam2-make-shards
#SBATCH --array=0-7
#SBATCH --cpus-per-task=16
#SBATCH --mem-per-cpu=3G
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=make_shards-%A_%a.out
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
if [ -n "${SAM2_SCALE_ENV:-}" ]; then
    # shellcheck disable=SC1090
    source "$SAM2_SCALE_ENV"
fi
PYTHON=${PYTHON:-.venv/bin/python}

# Array indices may start anywhere (--array=1-64): tasks are numbered from the first one.
task_id=$(( ${SLURM_ARRAY_TASK_ID:-0} - ${SLURM_ARRAY_TASK_MIN:-0} ))
num_tasks=${SLURM_ARRAY_TASK_COUNT:-1}
workers=${SLURM_CPUS_PER_TASK:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}

echo "[make_shards.sh] job ${SLURM_JOB_ID:-local} task $task_id/$num_tasks on $(hostname), $workers workers, restart ${SLURM_RESTART_COUNT:-0}"
exec "$PYTHON" data_prep/make_shards.py "$@" --workers "$workers" --num-tasks "$num_tasks" --task-id "$task_id" --no-progress
