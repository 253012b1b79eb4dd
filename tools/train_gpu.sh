#!/usr/bin/env bash
# The backbone on a lent GPU (the device tool), from the shipped weights, in two calls of one schedule:
#   bash tools/prepare_gpu.sh                                    # here, once: photos and wheels, sizes checked
#   run "BUDGET=520 bash tools/train_gpu.sh", carry [".whl", ".gpudata"], timeout_s 600
#   run "BUDGET=110 bash tools/train_gpu.sh" at once on the warm machine: resumes, the lr decays, exports
# Each call returns the weights (split under 16 MiB: cat $OUT/NAME.safetensors.part-* > NAME.safetensors),
# the learning curve, the log, the timed configurations (configs.json) and an operator profile. If the
# second call never comes, the first one's export (the EMA, where it validates better) is the result.
# Rehearse here, both calls: DEVICE=cpu BUDGET=60 TOTAL=90 bash tools/train_gpu.sh, then BUDGET=40 (CPU: small
# batches and validation, eager).
# CONTEXT=1 trains the context model for y with the backbone and exports it beside it (aecodec-context-v2-
# candidate): off by default, since the CPU rehearsal ran at 75% of the backbone's samples per second (the
# bar is 90%); try it on a loan whose first call shows the backbone ahead of JPEG 2000.
set -euo pipefail
budget=${BUDGET:-520}    # seconds of training in this call
total=${TOTAL:-630}      # seconds of the whole schedule (both calls); the lr decays over its last 15%
name=${NAME:-aecodec-mshp-v2-candidate}
ckpt=${CKPT:-/tmp/aecodec-gpu.pt}
device=${DEVICE:-cuda}
source "$(dirname "$0")/gpu_setup.sh"
context_name=${CONTEXT_NAME:-aecodec-context-v2-candidate}
if [ "${CONTEXT:-0}" = 1 ]; then with_context=(--context); export_context=(--export-context "$out/$context_name.safetensors")
else with_context=(); export_context=(); fi
# batch, held-out photos, their size, steps between validations
if [ "$device" = cuda ]; then small=(32 16 512 5000); else small=(4 2 256 20); fi
# Quality levels from about 0.12 bpp to above 40.5 dB on Kodak (the shipped 0.0018..0.18, widened).
lambdas=${LAMBDAS:-0.0014,0.00304,0.00661,0.0144,0.0312,0.0678,0.147,0.32}
if [ -f "$ckpt" ]; then
  start=()  # the second call: the checkpoint and the configuration the first call chose
  configs=$(cat "$ckpt.config" 2>/dev/null || echo eager)
else
  start=(--init weights/aecodec-mshp-v1.safetensors --lambdas "$lambdas")
  configs=${CONFIGS:-eager,eager-x2,compile-x2,cudagraphs-x2}  # about 60 s, plus compilation
  [ "$device" = cuda ] || configs=${CONFIGS:-eager,eager-x2}
fi
python3 -W ignore tools/train.py --data .gpudata/photos --device "$device" "${start[@]}" "${with_context[@]}" --ckpt "$ckpt" \
  --batch "${BATCH:-${small[0]}}" --lr "${LR:-3e-4}" --warmup 300 --scale-max 1.5 --ema 0.999 \
  --time-budget "$total" --stop-after "$budget" --configs "$configs" --trial-seconds "${TRIAL:-15}" \
  --val-every "${VAL_EVERY:-${small[3]}}" --val-images "${VAL_IMAGES:-${small[1]}}" --val-size "${VAL_SIZE:-${small[2]}}" \
  --log-every "${LOG_EVERY:-200}" --ckpt-every 10000 --profile "$out" --log "$out/curve.jsonl" 2>&1 \
  | tee "$out/train.log" || echo "training stopped early; exporting its last checkpoint"
python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['chosen'])" "$out/configs.json" > "$ckpt.config" \
  || rm -f "$ckpt.config"
cat > "$out/info.json" <<INFO
{"data": "$(ls .gpudata/photos | wc -l) whole photos of ../shared/data/photos less the held-out ones (prepare_gpu.sh: 0.8 scale, AVIF 4:4:4 q78), random 256 px crops at scales 1..1.5",
 "licences": "see ../shared/data/photos/SOURCES.csv: every one allows redistribution and commercial use",
 "device": "$(python3 -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')",
 "candidate": "not loaded by default: the heads must be retrained on it first"}
INFO
python3 -W ignore tools/train.py --ckpt "$ckpt" --export "$out/$name.safetensors" --export-info "$out/info.json" \
  "${export_context[@]}"
split -b 15M "$out/$name.safetensors" "$out/$name.safetensors.part-"
rm -f "$out/$name.safetensors" "$out/info.json" "$out/$name".*.onnx  # graphs: written here by tools/export_graphs.py
ls -la "$out"
