#!/usr/bin/env bash
# Text-only SFT on NPUS devices with msrun, the released recipe (configs/recipes/text_sft.args; mindone's
# text_sft_seq_parallel.sh) with Ulysses sequence parallelism and ZeRO.
#   NPUS         processes (default 8; 1 runs the single-device trainer without msrun)
#   SP           sequence-parallel ranks per sample (default 4, or its largest divisor that divides NPUS)
#   ZERO_STAGE   0-3 (default 3)
#   MODEL_PATH   model to fine-tune (default BAAI/Emu3-Stage1: a local folder of it)
#   DATA_PATH    folder written by train/prepare_text_data.py (required)
#   OUTPUT_DIR   run folder (default outputs/text_sft_seq_parallel; worker logs in OUTPUT_DIR/parallel_logs)
#   MASTER_PORT  msrun's scheduler port (default: a free one)
# Extra arguments go to train/train.py and override the recipe, e.g. --fp16 False --max_steps 100.
# On a CPU, NPUS=2 SP=2 with a tiny model runs the same code in 2 worker processes.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
export GLOG_v="${GLOG_v:-3}"
exec "${PYTHON:-$REPO/.venv/bin/python}" "$REPO/train/launch.py" --recipe text --npus 8 --sp 4 --zero 3 -- "$@"
