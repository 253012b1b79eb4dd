#!/usr/bin/env bash
# One training call of about 9 minutes on a lent GPU (the device tool), from the shipped weights.
# Prepare here, then run there with carry [".whl", ".gpudata"]:
#   python tools/prepare_data.py ../shared/data/train .gpudata/train --max-crops 1 --format jpeg --exclude-validation
#   cp weights/aecodec-mshp-v1.* .gpudata/   (optional: without them, training starts from scratch)
#   pip download compressai, pytorch-msssim and constriction cp312 wheels into .whl (see docs/TRAINING.md)
# The weights come back split in parts under 16 MiB: cat $OUT/aecodec-mshp-v1.safetensors.part-* > aecodec-mshp-v1.safetensors.
set -euo pipefail
budget=${BUDGET:-480}   # seconds of training; leaves time for start-up and export in a 9-minute call
source "$(dirname "$0")/gpu_setup.sh"
init=()
[ -f .gpudata/aecodec-mshp-v1.safetensors ] && init=(--init .gpudata/aecodec-mshp-v1.safetensors)
python3 -W ignore tools/train.py --data .gpudata/train --device "${DEVICE:-cuda}" --batch "${BATCH:-32}" \
  --lr "${LR:-3e-4}" --warmup 300 --time-budget "$budget" --ckpt /tmp/aecodec-gpu.pt \
  --val-every "${VAL_EVERY:-1000}" --ckpt-every 1000 --log "$out/curve.jsonl" "${init[@]}" 2>&1 | tee "$out/train.log" || echo "training stopped early; exporting its last checkpoint"
python3 -W ignore tools/train.py --ckpt /tmp/aecodec-gpu.pt --export "$out/aecodec-mshp-v1.safetensors"
split -b 15M "$out/aecodec-mshp-v1.safetensors" "$out/aecodec-mshp-v1.safetensors.part-"
rm "$out/aecodec-mshp-v1.safetensors"
ls -la "$out"
