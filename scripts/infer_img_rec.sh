#!/usr/bin/env bash
# Image reconstruction with the Emu3 vision tokenizer.
#   MODEL_PATH  folder of Emu3-VisionTokenizer (default: random weights, reduced-width released topology)
#   IMAGE       an image file, or VIDEO_DIR a folder of frames (default: a generated test image)
#   MODE        pynative | graph (default pynative);  DTYPE fp32 | fp16 | bf16 (default: by device)
set -euo pipefail
# No cd: MODEL_PATH, IMAGE, OUTPUT_DIR… are taken relative to where the user runs the script.
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
args=(--mode "${MODE:-pynative}" --output-dir "${OUTPUT_DIR:-outputs/reconstruction}")
[ -n "${MODEL_PATH:-}" ] && args+=(--model-path "$MODEL_PATH")
[ -n "${IMAGE:-}" ] && args+=(--image "$IMAGE")
[ -n "${VIDEO_DIR:-}" ] && args+=(--video-dir "$VIDEO_DIR")
[ -n "${DTYPE:-}" ] && args+=(--dtype "$DTYPE")
export GLOG_v="${GLOG_v:-3}"
exec "$PYTHON" "$REPO"/scripts/autoencode.py "${args[@]}" "$@"
