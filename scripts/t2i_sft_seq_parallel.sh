#!/usr/bin/env bash
# Text-to-image SFT on NPUS devices with msrun, the released recipe (mindone's t2i_sft_seq_parallel.sh): Ulysses
# sequence parallelism over SP ranks, ZeRO-3, loss on visual tokens only, 512x512 images (image_area 262144) in
# 4200-token samples, fp16 with a dynamic loss scale, recompute, AdamW (0.9, 0.95, eps 1e-6, weight decay 0.1),
# lr 1e-6 cosine_with_min_lr, warmup 30, 4 epochs.
#   NPUS         processes (default 8; 1 runs the single-device trainer without msrun)
#   SP           sequence-parallel ranks per sample (default 8; must divide NPUS, the heads and the sample length)
#   ZERO_STAGE   0-3 (default 3)
#   MODEL_PATH   model to fine-tune (default BAAI/Emu3-Stage1: a local folder of it)
#   DATA_PATH    folder written by train/prepare_vision_data.py (required)
#   OUTPUT_DIR   run folder (default outputs/t2i_sft_seq_parallel; worker logs in OUTPUT_DIR/parallel_logs)
#   MASTER_PORT  msrun's scheduler port (default: a free one)
# Extra arguments go to train/train.py and override these defaults, e.g. --fp16 False --max_steps 100.
# On a CPU: NPUS=2 SP=2 with a tiny model runs the same code (2 worker processes).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
: "${DATA_PATH:?set DATA_PATH to a folder written by train/prepare_vision_data.py}"
OUTPUT_DIR="${OUTPUT_DIR:-outputs/t2i_sft_seq_parallel}"
export GLOG_v="${GLOG_v:-3}"
exec "$PYTHON" "$REPO/train/launch.py" --npus "${NPUS:-8}" --master_port "${MASTER_PORT:-}" \
    --log_dir "$OUTPUT_DIR/parallel_logs" -- \
    --model_name_or_path "${MODEL_PATH:-BAAI/Emu3-Stage1}" --train_data_path "$DATA_PATH" --output_dir "$OUTPUT_DIR" \
    --sequence_parallel_shards "${SP:-8}" --ms_zero_stage "${ZERO_STAGE:-3}" \
    --mode 0 --fp16 True --loss_scaler_type dynamic --init_loss_scale 1024 \
    --null_prompt_prob 0.05 --apply_loss_on_only_vision True --apply_loss_on_only_text False \
    --image_area 262144 --max_position_embeddings 4200 --trainable_hidden_layers 32 --gradient_checkpointing True \
    --num_train_epochs 4 --per_device_train_batch_size 1 --gradient_accumulation_steps 1 \
    --learning_rate 1e-6 --min_learning_rate 1e-6 --lr_scheduler_type cosine_with_min_lr --warmup_steps 30 \
    --weight_decay 0.1 --max_grad_norm 5.0 --adam_beta1 0.9 --adam_beta2 0.95 --adam_epsilon 1e-6 \
    --save_strategy epoch --save_total_limit 5 --logging_steps 10 "$@"
