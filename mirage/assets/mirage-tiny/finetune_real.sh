#!/usr/bin/env bash
# mirage-tiny, real-data fine-tune (issue 21 item 3): the shipped model fine-tuned (stage 2: side branch + LoRA) on
# real windows of a TUM RGB-D sequence's training part mixed with the procedural memory-task pool, then both models
# evaluated on the sequence's held-out part and on the 8 procedural held-out rooms of the model card. CPU only.
# Run from the repository root with the venv active:
#     bash mirage/assets/mirage-tiny/finetune_real.sh TUM_DIR [RUN_DIR]
# Resumable like train.sh (finished steps are skipped, training resumes from its latest checkpoint).
# Environment: THREADS (default 1), BASE (the model to fine-tune, default mirage/assets/mirage-tiny), ROOMS
# (procedural training rooms, default 600), POOL (an existing procedural pool folder, e.g. a train.sh run's
# RUN/pool, instead of rendering one), SPLIT (the first held-out frame: frames 0..SPLIT-1 train, SPLIT.. are held
# out; default 415, 60% of fr1/rpy's 692), FRACTION (share of real samples, default 0.3), STEPS (default 1000), LR
# (default 3e-4), LORA (LoRA rank, default 8), TRAIN_CAMERA=1 (also train the camera embedding; default frozen),
# FT (the run's folder under RUN_DIR, default finetune: several variants can share the pools), SHIP (where to write
# the fine-tuned model, LoRA folded; default: not shipped).
set -euo pipefail
TUM=${1:?usage: finetune_real.sh TUM_DIR [RUN_DIR]}
R=${2:-runs/mirage-tiny-real}
T=${THREADS:-1}
BASE=${BASE:-mirage/assets/mirage-tiny}
ROOMS=${ROOMS:-600}
POOL=${POOL:-$R/pool}
SPLIT=${SPLIT:-415}
STEPS=${STEPS:-1000}
FT=${FT:-finetune}
CAMERA=--no-train-camera-embedding; [ "${TRAIN_CAMERA:-0}" = 1 ] && CAMERA=
export OMP_NUM_THREADS=$T
mkdir -p "$R"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$R/finetune.log"; }

# 1. The procedural pool (train.sh's step 3; resumable, skipped where done) and the real windows of the training
#    part: every 8th start after 64 frames of history, 33 frames at strides 1 and 2, the memory 16 frames spread
#    over everything before the window. Both encoded with the base model's autoencoder.
log "pools"
python -m mirage.train.memory_pool render "$POOL" --split heldout --rooms 48
python -m mirage.train.memory_pool render "$POOL" --split train --rooms "$ROOMS"
if [ ! -f "$R/real-pool/raw/.done-$SPLIT" ]; then  # (classifying the windows reads the frames: once)
  python -m mirage.train.memory_pool render-tum "$R/real-pool" --tum "$TUM@0:$SPLIT"
  touch "$R/real-pool/raw/.done-$SPLIT"
fi
python -m mirage.train.memory_pool encode "$R/real-pool" --model "$BASE"
python -m mirage.train.memory_pool encode "$POOL" --model "$BASE"

# 2. Stage 2 from the base model (its side branch and folded backbone; a fresh LoRA rank 8), the mix.
if [ ! -f "$R/$FT/final/mirage_world_model.json" ] || \
   [ "$(python -c "import json;print(json.load(open('$R/$FT/final/training.json'))['steps'])")" != "$STEPS" ]; then
  log "$FT ($STEPS steps, real fraction ${FRACTION:-0.3})"
  mirage train --model "$BASE" --stage 2 --steps "$STEPS" --data memory-pool --pool "$POOL" \
    --real-pool "$R/real-pool" --real-fraction "${FRACTION:-0.3}" --batch-size 8 --checkpoint-every 100 \
    --no-progress --output "$R/$FT" --resume --lr-schedule cosine --lr "${LR:-3e-4}" --warmup-steps 20 \
    --lora-rank "${LORA:-8}" --memory-dropout 0.05 $CAMERA
  python -m mirage.train.heldout --model "$R/$FT/final" --pool "$POOL" --output "$R/heldout.jsonl"
fi

# 3. Both models on the held-out part (memory from its first 30%, windows of every 2nd frame after it) and on the
#    model card's 8 procedural rooms.
for name in base "$FT"; do
  model=$BASE; [ "$name" = "$FT" ] && model=$R/$FT/final
  [ -f "$R/eval-real-$name/results.json" ] || mirage eval --model "$model" --data "tum:$TUM@$SPLIT:" \
    --memory-fraction 0.3 --frame-stride 2 --scenes 4 --output "$R/eval-real-$name" --no-progress
  [ -f "$R/eval-procedural-$name/results.json" ] || mirage eval --model "$model" --protocol memory --scenes 8 \
    --output "$R/eval-procedural-$name" --no-progress
done

# 4. (SHIP=DIR) Export: LoRA folded into the backbone.
if [ -n "${SHIP:-}" ]; then
  log "ship to $SHIP"
  python -m mirage.train.tiny_v2 ship --model "$R/$FT/final" --output "$SHIP"
fi
log "done"
