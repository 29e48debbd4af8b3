#!/bin/bash
# Stage 2, video + image: SA-V and SA-1B mixed, one task per GPU. Submit from the repository root:
#
#   sbatch launch/pretrain_sav.sh
#   sbatch --nodes=2 launch/pretrain_sav.sh optim.total_steps=20000 train.strategy=fsdp
#   CONFIG=configs/my.yaml OUT_DIR=/checkpoints/run1 WANDB_MODE=offline sbatch launch/pretrain_sav.sh
#
# Preemption and the time limit send SIGUSR1: the run checkpoints, exits 75, and the job is
# requeued; the requeued job resumes from that checkpoint. Settings: see launch/common.sh.
#SBATCH --job-name=sam2-pretrain-sav
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --mem=0
#SBATCH --time=48:00:00
#SBATCH --signal=B:USR1@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail
CONFIG=${CONFIG:-configs/sav_sa1b_full.yaml}
# shellcheck source=launch/common.sh
source "${SLURM_SUBMIT_DIR:-.}/launch/common.sh"
run_training "$@"
