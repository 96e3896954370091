#!/usr/bin/env bash
# Image understanding (VQA / captioning) with Emu3: greedy decoding, up to 1024 new tokens.
#   MODEL_PATH      folder of BAAI/Emu3-Chat (or Emu3-Stage1 with CHAT_TEMPLATE='{image_prompt}{text_prompt}');
#                   default: a tiny LLM with random weights
#   VQ_PATH         folder of BAAI/Emu3-VisionTokenizer; default: random weights (configs/vision_tokenizer/small.json)
#   TOKENIZER_PATH  tokenizer folder (default: MODEL_PATH; build one with `python -m emu3.mllm.tokenizer_files OUT`)
#   IMAGE           an image file (default: a generated test picture);  PROMPT the question
#   MAX_NEW_TOKENS  (default 1024);  MODE graph | pynative (default graph);  DTYPE fp32 | fp16 | bf16;  SEED
#   OUTPUT_DIR      if set, the answers are also written to OUTPUT_DIR/answers.txt
# Extra arguments are passed on, e.g. --image b.png --prompt "What is in the picture?" for a batch.
set -euo pipefail
# No cd: MODEL_PATH, IMAGE, OUTPUT_DIR… are taken relative to where the user runs the script.
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
args=(--mode "${MODE:-graph}" --max-new-tokens "${MAX_NEW_TOKENS:-1024}" --seed "${SEED:-0}")
[ -n "${MODEL_PATH:-}" ] && args+=(--model-path "$MODEL_PATH")
[ -n "${VQ_PATH:-}" ] && args+=(--vq-path "$VQ_PATH")
[ -n "${TOKENIZER_PATH:-}" ] && args+=(--tokenizer-path "$TOKENIZER_PATH")
[ -n "${IMAGE:-}" ] && args+=(--image "$IMAGE")
[ -n "${PROMPT:-}" ] && args+=(--prompt "$PROMPT")
[ -n "${CHAT_TEMPLATE:-}" ] && args+=(--chat-template "$CHAT_TEMPLATE")
[ -n "${DTYPE:-}" ] && args+=(--dtype "$DTYPE")
[ -n "${OUTPUT_DIR:-}" ] && args+=(--output-dir "$OUTPUT_DIR")
export GLOG_v="${GLOG_v:-3}"
exec "$PYTHON" "$REPO"/scripts/multimodal_understanding.py "${args[@]}" "$@"
