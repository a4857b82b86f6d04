#!/usr/bin/env bash
# The FVD reference points of docs/fvd.md on Moving MNIST test clips (N = 256), from the repo root:
#   bash benchmarks/fvd_reference_points.sh [work-folder]
# About 20-30 minutes on a 2-core CPU (1,280 clips through I3D).
set -euo pipefail
PY=${PY:-.venv/bin/python}
D=${1:-outputs/fvd_reference}
mkdir -p "$D"
$PY -m lvdm_ref data moving-mnist --num 1024 --frames 16 --size 64 --digits 2 --split test --seed 1 --out "$D/real_a.npz" | tail -1
$PY -m lvdm_ref data moving-mnist --num 1024 --frames 16 --size 64 --digits 2 --split test --seed 2 --out "$D/real_b.npz" | tail -1
$PY - "$D" <<'PY'
import sys
import numpy as np
folder = sys.argv[1]
b = np.load(f"{folder}/real_b.npz")["videos"][:256]  # uint8 (256, 16, 64, 64, 1)
rng = np.random.default_rng(0)
np.savez(f"{folder}/static.npz", videos=np.repeat(b[:, :1], 16, axis=1))  # first frame held still
order = np.argsort(rng.random((len(b), 16)), axis=1)  # a random frame order per clip
np.savez(f"{folder}/shuffled.npz", videos=np.take_along_axis(b, order[:, :, None, None, None], axis=1))
np.savez(f"{folder}/noise.npz", videos=rng.integers(0, 256, size=b.shape, dtype=np.uint8))
PY
for fake in real_b shuffled static noise; do
  echo "== $fake"
  $PY -m lvdm_ref fvd --real "$D/real_a.npz" --fake "$D/$fake.npz" --num 256 2>/dev/null | tail -1
done
