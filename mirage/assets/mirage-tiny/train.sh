#!/usr/bin/env bash
# mirage-tiny v2 (issue 10), from nothing to the shipped model. CPU only. Run from the repository root with the
# venv active:   bash mirage/assets/mirage-tiny/train.sh [RUN_DIR]
# Every step is resumable: run the script again after an interruption and it continues where it stopped
# (finished steps are skipped, the training stages resume from their latest checkpoint).
# Environment: THREADS (torch threads, default 1), AE (a trained PatchAutoencoder directory to use instead of
# training one in step 1, e.g. a checkpoint's model/ of a longer run), SHIP (where step 7 writes the model,
# default mirage/assets/mirage-tiny), ROOMS (training rooms, default 1200), STEPS0/STEPS1/STEPS2 (default 2000 / 1200 /
# 700, as released), EVAL_SCENES (default 6).
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
#    (latent statistics measured here when the autoencoder directory has none), no side branch.
if [ ! -f "$R/init/mirage_world_model.json" ]; then
  log "init from $AE"
  python -m mirage.train.tiny_v2 init --autoencoder "$AE" --output "$R/init"
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
#    + LoRA (rank 8) on self-attention, jointly with the side branch. Held-out flow loss with memory controls
#    (true / shuffled / empty / off) after each stage into $R/heldout.jsonl.
POOL="--data memory-pool --pool $R/pool --batch-size 8 --checkpoint-every 100 --no-progress"
stage() {  # stage N MODEL STEPS extra-args...
  local n=$1 model=$2 steps=$3; shift 3
  if [ ! -f "$R/stage$n/final/mirage_world_model.json" ] || [ "$(python -c "import json;print(json.load(open('$R/stage$n/final/training.json'))['steps'])")" != "$steps" ]; then
    log "stage $n"
    mirage train --model "$model" --stage "$n" --steps "$steps" $POOL --output "$R/stage$n" --resume "$@"
    python -m mirage.train.heldout --model "$R/stage$n/final" --pool "$R/pool" --output "$R/heldout.jsonl"
  fi
}
stage 0 "$R/init" "${STEPS0:-2000}" --lr 1e-3 --warmup-steps 50 --window-starts $(seq 0 24)
stage 1 "$R/stage0/final" "${STEPS1:-1200}" --side-branch on --no-train-camera-embedding --lr 1e-3 --warmup-steps 20 \
  --memory-dropout 0.05
stage 2 "$R/stage1/final" "${STEPS2:-700}" --no-train-camera-embedding --lr 5e-4 --warmup-steps 20 --lora-rank 8 \
  --memory-dropout 0.05

# 7. Export: LoRA folded into the backbone, one self-contained directory of safetensors.
log "ship to $SHIP"
python -m mirage.train.tiny_v2 ship --model "$R/stage2/final" --output "$SHIP"

# 8. Closed-loop evaluation on held-out rooms (the memory protocol, PSNR_C / SSIM_C without the conditioning frame).
log "eval"
mirage eval --model "$SHIP" --protocol memory --methods latent shuffled empty none rgb_cache reprojection \
  --scenes "$EVAL_SCENES" --output "$R/eval" --no-progress
log "done"
