#!/usr/bin/env bash
# Text-to-image generation with Emu3 (released recipe: CFG 3.0, top-k 2048, positive/negative prompts).
#   MODEL_PATH      folder of BAAI/Emu3-Gen (or Emu3-Stage1); default: a tiny LLM with random weights
#   VQ_PATH         folder of BAAI/Emu3-VisionTokenizer; default: random weights (configs/vision_tokenizer/small.json)
#   TOKENIZER_PATH  tokenizer folder (default: MODEL_PATH; build one with `python -m emu3.mllm.tokenizer_files OUT`)
#   PROMPT          the prompt (default: "a portrait of young girl.");  RATIO "W:H" (default 1:1)
#   IMAGE_AREA      pixels (default: the model config's, 720*720 for Emu3-Gen)
#   MODE            graph | pynative (default graph);  DTYPE fp32 | fp16 | bf16 (default: by device);  SEED (default 0)
#   OUTPUT_DIR      where the PNGs go (default outputs/image_generation)
# Extra arguments are passed on, e.g. --guidance-scale 3.0 --top-k 2048 --prompt "another prompt".
set -euo pipefail
# No cd: MODEL_PATH, IMAGE, OUTPUT_DIR… are taken relative to where the user runs the script.
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
args=(--mode "${MODE:-graph}" --ratio "${RATIO:-1:1}" --seed "${SEED:-0}"
      --output-dir "${OUTPUT_DIR:-outputs/image_generation}")
[ -n "${MODEL_PATH:-}" ] && args+=(--model-path "$MODEL_PATH")
[ -n "${VQ_PATH:-}" ] && args+=(--vq-path "$VQ_PATH")
[ -n "${TOKENIZER_PATH:-}" ] && args+=(--tokenizer-path "$TOKENIZER_PATH")
[ -n "${PROMPT:-}" ] && args+=(--prompt "$PROMPT")
[ -n "${IMAGE_AREA:-}" ] && args+=(--image-area "$IMAGE_AREA")
[ -n "${DTYPE:-}" ] && args+=(--dtype "$DTYPE")
export GLOG_v="${GLOG_v:-3}"
exec "$PYTHON" "$REPO"/scripts/image_generation.py "${args[@]}" "$@"
