# shellcheck shell=bash
# Shared body of the training launchers (pretrain_sav.sh, pretrain_sa1b.sh, finetune.sh);
# sourced, not run. Launch pattern: one srun task per GPU (or per CPU slot on CPU partitions);
# each task reads its rank from SLURM_PROCID and joins the process group itself.
#
# Settings, all optional, from the environment of `sbatch`:
#   CONFIG         YAML config (each launcher has its default)
#   OVERRIDES      extra key.sub=value overrides, space-separated (arguments to sbatch after the
#                  script name are overrides too)
#   OUT_DIR        -> train.out_dir (checkpoints, metrics, W&B files)
#   WANDB_MODE     -> wandb.mode (online | offline | disabled); WANDB_PROJECT -> wandb.project
#   PYTHON         interpreter (default .venv/bin/python in the submit directory)
#   SAM2_SCALE_ENV a file sourced first (module loads, conda activate, ...)
#   MASTER_PORT    default 20000 + job id mod 20000
#   STEP_END_WAIT  seconds the other tasks get once one has ended (default 120)

cd "${SLURM_SUBMIT_DIR:-.}" || exit 1
if [ -n "${SAM2_SCALE_ENV:-}" ]; then
    # shellcheck disable=SC1090
    source "$SAM2_SCALE_ENV"
fi
PYTHON=${PYTHON:-.venv/bin/python}
EXIT_PREEMPTED=75  # sam2_scale.train.preemption.EXIT_PREEMPTED: checkpoint written, requeue

# Rendezvous: the first node of the allocation hosts the store; every task derives the same port.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
export MASTER_ADDR MASTER_PORT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
# Fail a collective that hangs (a dead peer) instead of waiting for the time limit.
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
export PYTHONUNBUFFERED=1

log() { echo "[$(date +%H:%M:%S) ${SLURM_JOB_NAME:-launch}] $*"; }

# SIGUSR1 to the batch shell (#SBATCH --signal=B:USR1@120, or scancel --batch) is passed to
# the job steps: the trainer checkpoints at the next step boundary and exits 75.
forward_stop_signal() {
    log "stop signal: asking the training tasks to checkpoint and exit"
    scancel --signal=USR1 "$SLURM_JOB_ID" || true
}

run_training() {
    local overrides=()
    # shellcheck disable=SC2206  # OVERRIDES is a space-separated list by design
    [ -n "${OVERRIDES:-}" ] && overrides+=($OVERRIDES)
    overrides+=("$@")
    [ -n "${OUT_DIR:-}" ] && overrides+=("train.out_dir=$OUT_DIR")
    [ -n "${WANDB_MODE:-}" ] && overrides+=("wandb.mode=$WANDB_MODE")
    [ -n "${WANDB_PROJECT:-}" ] && overrides+=("wandb.project=$WANDB_PROJECT")

    log "job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0}: $SLURM_NNODES node(s) x ${SLURM_NTASKS_PER_NODE:-?} task(s)," \
        "master $MASTER_ADDR:$MASTER_PORT, config $CONFIG ${overrides[*]}"
    trap forward_stop_signal USR1 TERM
    # --resume auto: a requeued job continues from the newest complete checkpoint and W&B run.
    # After the first task ends, the others get STEP_END_WAIT seconds before they are killed: long
    # enough for every rank to finish its own exit after a preemption checkpoint (all exit 75), short
    # enough not to wait for a time-out when a rank crashed and its peers hang in a collective.
    # (--kill-on-bad-exit would kill ranks still closing after the first one exits 75.)
    srun --kill-on-bad-exit=0 --wait="${STEP_END_WAIT:-120}" "$PYTHON" -m sam2_scale.train --config "$CONFIG" --resume auto \
        "${overrides[@]}" &
    local srun_pid=$! rc=0
    # `wait` returns early when a trapped signal arrives; wait again until srun has exited.
    while true; do
        rc=0
        wait "$srun_pid" || rc=$?
        kill -0 "$srun_pid" 2>/dev/null || break
    done
    trap - USR1 TERM
    if [ "$rc" -eq "$EXIT_PREEMPTED" ]; then
        log "training checkpointed and stopped (exit $rc): requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID"
        exit 0
    fi
    log "training exited with $rc"
    exit "$rc"
}
