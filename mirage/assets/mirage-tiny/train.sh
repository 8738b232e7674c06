#!/usr/bin/env bash
# mirage-tiny v2 (issue 10), from nothing to the shipped model. CPU only. Run from the repository root with the
# venv active:   bash mirage/assets/mirage-tiny/train.sh [RUN_DIR]
# Every step is resumable: run the script again after an interruption and it continues where it stopped
# (finished steps are skipped, the training stages resume from their latest checkpoint).
# Environment: THREADS (torch threads, default 1), AE (a trained PatchAutoencoder directory to use instead of
# training one in step 1, e.g. a checkpoint's model/ of a longer run), SHIP (where step 7 writes the model,
# default mirage/assets/mirage-tiny), ROOMS (training rooms, default 1200), STEPS0/STEPS1/STEPS2 (default 3000 / 1500 /
# 1500, as released in v2.1), EVAL_SCENES (default 6), SINGLE_STAGE=1 (also train the single-stage ablation of
# `mirage eval --variants single_stage`: side branch + LoRA at once on the stage-0 backbone, STEPS1 + STEPS2 steps),
# INIT_ARGS (extra options of step 2, e.g. "--num-heads 8 --ffn-dim 768" for the wider transformer the model card
# measured as the next step).
set -euo pipefail
R=${1:-runs/mirage-tiny-v2}
T=${THREADS:-1}
ROOMS=${ROOMS:-1200}
SHIP=${SHIP:-mirage/assets/mirage-tiny}
EVAL_SCENES=${EVAL_SCENES:-6}
export OMP_NUM_THREADS=$T
mkdir -p "$R"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$R/train.log"; }

# 1. The per-frame autoencoder (PatchAutoencoder, spatial stride 8, temporal stride 1, 48 channels) on fresh
#    procedural rooms at 64x96; final/ gets the measured latent statistics.
if [ -z "${AE:-}" ]; then
  AE="$R/ae/final"
  if [ ! -f "$AE/config.json" ]; then
    RESUME=""; [ -d "$R/ae/checkpoints" ] && RESUME="--resume"
    log "autoencoder"
    mirage train --stage autoencoder --output "$R/ae" --threads "$T" --height 64 --width 96 --spatial-stride 8 \
      --ae-channels 128 192 --ae-layers-per-block 2 --batch-size 8 --views-per-room 4 --lr 1e-3 --warmup-steps 200 \
      --steps 6000 --eval-every 250 --checkpoint-every 250 $RESUME --no-progress
  fi
fi

# 2. Stage 0's starting model: random v2 transformer (4 layers, 4 heads x 32, FFN 384) + that autoencoder
#    (latent statistics measured here when the autoencoder directory has none), no side branch. The transformer
#    predicts clean latents (prediction_type "sample", v2.1; see mirage/pipeline/prediction.py).
if [ ! -f "$R/init/mirage_world_model.json" ]; then
  log "init from $AE"
  python -m mirage.train.tiny_v2 init --autoencoder "$AE" --output "$R/init" ${INIT_ARGS:-}
fi

# 3. The memory-task pool: fresh rooms (earlier pass + 33-frame out-and-back clip), rendered once (two shards in
#    parallel) and encoded once; 48 held-out rooms from the disjoint held-out seed range.
log "pool: render"
python -m mirage.train.memory_pool render "$R/pool" --split heldout --rooms 48
python -m mirage.train.memory_pool render "$R/pool" --split train --rooms "$ROOMS" --shard 0 --num-shards 2 &
python -m mirage.train.memory_pool render "$R/pool" --split train --rooms "$ROOMS" --shard 1 --num-shards 2
wait
log "pool: encode"
python -m mirage.train.memory_pool encode "$R/pool" --model "$R/init" --shard 0 --num-shards 2 &
python -m mirage.train.memory_pool encode "$R/pool" --model "$R/init" --shard 1 --num-shards 2
wait

# 4-6. Stage 0: the camera-conditioned backbone (no memory) on windows anywhere in the clips. Stage 1: a fresh side
#    branch on the frozen stage-0 backbone, windows that reach the return (memory = the earlier pass). Stage 2:
#    + LoRA (rank 8) on self-attention, jointly with the side branch. Every stage: cosine learning rate to 10%.
#    Held-out flow loss with memory controls (true / shuffled / empty / off) after each stage into $R/heldout.jsonl.
POOL="--data memory-pool --pool $R/pool --batch-size 8 --checkpoint-every 100 --no-progress"
stage() {  # stage N RUN MODEL STEPS extra-args...  (N: the trainer's stage; RUN: the folder under $R)
  local n=$1 run=$2 model=$3 steps=$4; shift 4
  if [ ! -f "$R/$run/final/mirage_world_model.json" ] || [ "$(python -c "import json;print(json.load(open('$R/$run/final/training.json'))['steps'])")" != "$steps" ]; then
    log "$run (stage $n)"
    mirage train --model "$model" --stage "$n" --steps "$steps" $POOL --output "$R/$run" --resume --lr-schedule cosine "$@"
    python -m mirage.train.heldout --model "$R/$run/final" --pool "$R/pool" --output "$R/heldout.jsonl"
  fi
}
S1=${STEPS1:-1500}; S2=${STEPS2:-1500}
stage 0 stage0 "$R/init" "${STEPS0:-3000}" --lr 1e-3 --warmup-steps 50 --window-starts $(seq 0 24)
stage 1 stage1 "$R/stage0/final" "$S1" --side-branch on --no-train-camera-embedding --lr 1e-3 --warmup-steps 20 \
  --memory-dropout 0.05
stage 2 stage2 "$R/stage1/final" "$S2" --no-train-camera-embedding --lr 5e-4 --warmup-steps 20 --lora-rank 8 \
  --memory-dropout 0.05

# 7. Export: LoRA folded into the backbone, one self-contained directory of safetensors.
log "ship to $SHIP"
python -m mirage.train.tiny_v2 ship --model "$R/stage2/final" --output "$SHIP"

# 8. Closed-loop evaluation on held-out rooms (the memory protocol, PSNR_C / SSIM_C without the conditioning frame).
log "eval"
mirage eval --model "$SHIP" --protocol memory --methods latent shuffled empty none rgb_cache reprojection \
  --scenes "$EVAL_SCENES" --output "$R/eval" --no-progress

# 9. (SINGLE_STAGE=1) The single-stage ablation, then the ablation rows with it.
if [ "${SINGLE_STAGE:-0}" = 1 ]; then  # the ablation: one stage, the same steps as stages 1 + 2 together
  stage 2 single_stage "$R/stage0/final" "$((S1 + S2))" --side-branch on --no-train-camera-embedding --lr 1e-3 \
    --warmup-steps 20 --lora-rank 8 --memory-dropout 0.05
  mirage eval --model "$SHIP" --protocol memory --variants all --single-stage-model "$R/single_stage/final" \
    --scenes "$EVAL_SCENES" --output "$R/eval-variants" --no-progress
fi
log "done"
