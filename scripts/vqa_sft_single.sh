#!/usr/bin/env bash
# VQA SFT on one device with the released recipe (configs/recipes/vqa_sft.args, without sequence
# parallelism or ZeRO).
#   MODEL_PATH   model to fine-tune (default BAAI/Emu3-Stage1: a local folder of it)
#   DATA_PATH    folder written by train/prepare_vqa_data.py or prepare_text_data.py (required)
#   OUTPUT_DIR   run folder (default outputs/vqa_sft_single)
# Extra arguments go to train/train.py and override the recipe, e.g. --fp16 False --max_steps 100.
set -euo pipefail
# No cd: MODEL_PATH, DATA_PATH and OUTPUT_DIR are taken relative to where the user runs the script.
REPO="$(cd "$(dirname "$0")/.." && pwd)"
export GLOG_v="${GLOG_v:-3}"
exec "${PYTHON:-$REPO/.venv/bin/python}" "$REPO/train/launch.py" --recipe vqa --single -- "$@"
