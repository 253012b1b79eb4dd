#!/usr/bin/env bash
# One call of about 9 minutes on a lent GPU (the device tool): denoising heads trained side by side from
# the shipped one, each variant in its own process (one process of these small convolutions leaves the GPU
# mostly idle). Each writes its checkpoint and log to $OUT; compare them here on the held-out crops and
# export the best with `tools/train_heads.py --head denoising --ckpt NAME.pt --export ...`.
# Prepare here, then run there with carry [".whl", ".gpudata/denoise"] (the wheels: see tools/train_gpu.sh):
#   python tools/prepare_data.py ../shared/data/train .gpudata/denoise --shrink 176 --format jpeg
#   (a 176x176 crop of each training crop and 16 held-out crops whole, JPEG q95 4:4:4, 28 MB: small
#   enough to travel beside the backbone's weights, 64 MiB in all)
#   bash tools/train_heads_gpu.sh
set -uo pipefail
budget=${BUDGET:-480}   # seconds of training per variant
source "$(dirname "$0")/gpu_setup.sh"

variant() {  # NAME, then train_heads.py options
  local name=$1
  shift
  python3 -W ignore tools/train_heads.py --head denoising --data "${DATA:-.gpudata/denoise}" --device "${DEVICE:-cuda}" \
    --threads 4 --init "${INIT:-weights/aecodec-denoise-v3.safetensors}" --ckpt "$out/$name.pt" --time-budget "$budget" \
    --batch "${BATCH:-32}" --val-every "${VAL_EVERY:-500}" --ckpt-every 250 "$@" >"$out/$name.log" 2>&1 &
}
# A second refiner (64 channels, 8 convolutions on the image folded 2x2) after the shipped head's, which it
# starts from exactly: trained alone, with the first refiner, or with the whole head.
second=(--second-channels 64 --second-layers 8 --second-fold 2)
variant second-only --lr 5e-4 --warmup 200 "${second[@]}" --second-only
variant second-refiners --lr 2e-4 --warmup 200 "${second[@]}" --refiner-only
variant second-joint --lr 1e-4 --warmup 200 "${second[@]}"
wait
for f in "$out"/*.log; do echo "== $f"; grep -E "^val|^stopped|Error|error" "$f" | tail -4; tail -1 "$f"; done
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
ls -la "$out"
