#!/usr/bin/env bash
# The tiny world, end to end on this machine (5-13 min on 2 CPU cores; budget 15): 64x64 synthetic shape pictures,
# a vision tokenizer and an Emu3 LLM trained from scratch with this project's training scripts, text-to-image with
# CFG and question answering measured on held-out combinations; report in outputs/tiny-world/report.html.
#   OUTPUT_DIR   where everything goes (default outputs/tiny-world)
# Running it again skips finished stages and resumes an interrupted one. Extra arguments go to train/tiny_world.py
# (--vq-steps, --llm-steps, --train-per-combination, ... see --help).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
export GLOG_v="${GLOG_v:-3}"
exec "$PYTHON" "$REPO/train/tiny_world.py" --output-dir "${OUTPUT_DIR:-outputs/tiny-world}" "$@"
