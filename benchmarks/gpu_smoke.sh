#!/usr/bin/env bash
# The CUDA smoke test: every GPU path of the project in a few minutes, one JSON line at the end.
#
#   bash benchmarks/gpu_smoke.sh            # on a machine with a CUDA GPU, from the project root
#
# Runs `sample` (32 clips, DDIM 50), `sample-long` (64 frames), 50 training steps of `train` (bf16
# autocast, the trainer's default on CUDA) and `fvd` on 32 clips, each with --device cuda, and prints
# {"gpu": ..., "torch": ..., "<step>": {"seconds": ..., "result": <the command's JSON>}, ...}.
# No test depends on it; docs/studies/speed.md shows its output from the last GPU it ran on.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-outputs/gpu_smoke}
CKPT=data/checkpoints
mkdir -p "$OUT"
results="$OUT/steps.jsonl"
: > "$results"

step() {  # step NAME COMMAND...: run, time, keep the command's last stdout line (its JSON result)
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  "$@" > "$OUT/$name.out"
  end=$(date +%s.%N)
  "$PY" - "$name" "$start" "$end" "$OUT/$name.out" >> "$results" <<'PYEOF'
import json, sys
name, start, end, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
lines = [line for line in open(path).read().splitlines() if line.strip()]
print(json.dumps({name: {"seconds": round(end - start, 1), "result": json.loads(lines[-1])}}))
PYEOF
}

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: this script checks the GPU paths')"
step data "$PY" -m lvdm_ref data moving-mnist --num 32 --split test --seed 1 --out "$OUT/real.npz"
step sample "$PY" -m lvdm_ref sample --ckpt "$CKPT/mmnist_short.safetensors" --num 32 --sampler ddim --steps 50 \
  --out "$OUT/fake.npz" --device cuda
step sample_long "$PY" -m lvdm_ref sample-long --pred "$CKPT/mmnist_pred.safetensors" \
  --interp "$CKPT/mmnist_interp.safetensors" --frames 64 --num 2 --out "$OUT/long.npz" --device cuda
step train_bf16 "$PY" -m lvdm_ref train --model short --preset mmnist --vae "$CKPT/mmnist_vae.safetensors" \
  --steps 50 --num-clips 256 --out "$OUT/train" --device cuda --no-compile
step fvd "$PY" -m lvdm_ref fvd --real "$OUT/real.npz" --fake "$OUT/fake.npz" --device cuda
"$PY" - "$results" <<'PYEOF'
import json, sys, torch
merged = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
for line in open(sys.argv[1]):
    merged.update(json.loads(line))
print(json.dumps(merged))
PYEOF
