#!/usr/bin/env bash
# How mirage-tiny was trained (CPU only, no GPU: 2 cores). Run from the repository root with .venv active.
# Wall time on 2 CPU cores: VAE ~16 min, transformer stages ~30 min, evaluation ~2 min.
set -euo pipefail
R=${1:-runs/mirage-tiny}
mkdir -p "$R"

# 1. The VAE (AutoencoderKLWan, base_dim 8: the built-in "tiny" shape) from scratch, 1200 + 2000 steps at 64x96,
#    on 24 synthetic scenes; the transformer trained alongside in these two runs was too small and is discarded.
COMMON="--scenes 24 --clips-per-scene 2 --num-dynamic 1 --cache-dir $R/cache64 --batch-size 4 --no-progress"
OMP_NUM_THREADS=1 mirage train --config tiny --stage 1 --vae-steps 1200 --steps 3000 $COMMON --output "$R/vae1"
OMP_NUM_THREADS=1 mirage train --config tiny --stage 1 --model "$R/vae1/final" --vae-steps 2000 --steps 6000 \
    $COMMON --output "$R/vae2"

# 2. Start of the real run: that VAE + a wider random transformer (6 layers, 4 heads x 48, FFN 768; 4.0M
#    parameters) at 128x192.
python - "$R/vae2/final" "$R/init" <<'PY'
import json, shutil, sys
from pathlib import Path
import torch
from diffusers import WanTransformer3DModel
from mirage.models.configs import transformer_config
src, out = Path(sys.argv[1]), Path(sys.argv[2])
shutil.rmtree(out, ignore_errors=True)
shutil.copytree(src / "backbone", out / "backbone")
cfg = transformer_config("tiny")
cfg.update(num_attention_heads=4, attention_head_dim=48, ffn_dim=768, num_layers=6)
torch.manual_seed(0)
WanTransformer3DModel(**cfg).save_pretrained(out / "backbone" / "transformer")
wm = json.loads((src / "mirage_world_model.json").read_text())
wm.update(height=128, width=192)
(out / "mirage_world_model.json").write_text(json.dumps(wm, indent=2))
PY

# 3. Stage 0 (the whole transformer: no pretrained video model exists at this size), then stages 1 and 2.
export OMP_NUM_THREADS=2
DATA="--scenes 128 --clips-per-scene 2 --num-dynamic 1 --trajectories forward turn orbit loop --cache-dir $R/cache128
      --batch-size 8 --memory-frames 0 8 --memory-dropout 0.1 --no-progress"
mirage train --model "$R/init" --stage 0 --steps 4000 --lr 1e-3 --warmup-steps 100 --checkpoint-every 1000 $DATA \
    --output "$R/stage0"
mirage train --model "$R/stage0/final" --stage 1 --steps 1000 --lr 3e-4 --warmup-steps 50 --checkpoint-every 500 $DATA \
    --output "$R/stage1"
mirage train --model "$R/stage1/final" --stage 2 --steps 1000 --lr 3e-4 --warmup-steps 50 --lora-rank 8 \
    --checkpoint-every 500 $DATA --output "$R/stage2"

# 4. Held-out evaluation (scene seeds 1000000..1000005, out-and-back trajectories).
mirage eval --model "$R/stage2/final" --scenes 6 --frames medium --output "$R/eval" --no-progress
