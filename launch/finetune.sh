#!/bin/bash
# Fine-tuning from released or exported weights (a Meta-format .pt), one task per GPU:
#
#   INIT_CHECKPOINT=checkpoints/sam2.1_hiera_base_plus.pt sbatch launch/finetune.sh
#   CONFIG=configs/longclip_finetune.yaml INIT_CHECKPOINT=runs/x/export.pt sbatch --nodes=1 launch/finetune.sh
#
# Preemption, requeue and settings as in launch/pretrain_sav.sh and launch/common.sh.
#SBATCH --job-name=sam2-finetune
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --mem=0
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail
CONFIG=${CONFIG:-configs/mose_finetune_base_plus.yaml}
# shellcheck source=launch/common.sh
source "${SLURM_SUBMIT_DIR:-.}/launch/common.sh"
if [ -n "${INIT_CHECKPOINT:-}" ]; then
    set -- "model.init_checkpoint=$INIT_CHECKPOINT" "$@"
fi
run_training "$@"
