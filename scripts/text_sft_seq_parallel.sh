#!/usr/bin/env bash
# Text-only SFT on NPUS devices with msrun (mindone's text_sft_seq_parallel.sh: the VQA recipe, image_area 100): Ulysses sequence
# parallelism over SP ranks, ZeRO-3, loss on the response only, 2560-token
# samples, fp16 with a dynamic loss scale, recompute, AdamW (0.9, 0.95, eps 1e-6, weight decay 0.1),
# lr 1e-5 -> 1e-6 cosine_with_min_lr, warmup 30, 50 epochs.
#   NPUS, SP (default 4), ZERO_STAGE (default 3), MODEL_PATH, MASTER_PORT: as in t2i_sft_seq_parallel.sh
#   DATA_PATH    folder written by train/prepare_text_data.py (required)
#   OUTPUT_DIR   run folder (default outputs/text_sft_seq_parallel; worker logs in OUTPUT_DIR/parallel_logs)
# Extra arguments go to train/train.py and override these defaults.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
: "${DATA_PATH:?set DATA_PATH to a folder written by train/prepare_text_data.py}"
OUTPUT_DIR="${OUTPUT_DIR:-outputs/text_sft_seq_parallel}"
export GLOG_v="${GLOG_v:-3}"
exec "$PYTHON" "$REPO/train/launch.py" --npus "${NPUS:-8}" --master_port "${MASTER_PORT:-}" \
    --log_dir "$OUTPUT_DIR/parallel_logs" -- \
    --model_name_or_path "${MODEL_PATH:-BAAI/Emu3-Stage1}" --train_data_path "$DATA_PATH" --output_dir "$OUTPUT_DIR" \
    --sequence_parallel_shards "${SP:-4}" --ms_zero_stage "${ZERO_STAGE:-3}" \
    --mode 0 --fp16 True --loss_scaler_type dynamic --init_loss_scale 1024 \
    --apply_loss_on_only_vision False --apply_loss_on_only_text True \
    --image_area 100 --max_position_embeddings 2560 --gradient_checkpointing True \
    --num_train_epochs 50 --per_device_train_batch_size 1 --gradient_accumulation_steps 1 \
    --learning_rate 1e-5 --min_learning_rate 1e-6 --lr_scheduler_type cosine_with_min_lr --warmup_steps 30 \
    --weight_decay 0.1 --max_grad_norm 5.0 --adam_beta1 0.9 --adam_beta2 0.95 --adam_epsilon 1e-6 \
    --save_strategy epoch --save_total_limit 5 --logging_steps 1 "$@"
