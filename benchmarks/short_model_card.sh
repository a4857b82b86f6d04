#!/usr/bin/env bash
# The model-card figures of the shipped short model, from the repo root:
#   bash benchmarks/short_model_card.sh [work-folder] [N]
# FVD of N generated clips (DDIM, 50 steps, eta 1) against N real test clips, next to the
# real-vs-real floor and the FVD of autoencoder reconstructions (the ceiling) at the same N; all of it
# in [work-folder]/card.json. CKPT=path scores another checkpoint (default: the shipped one).
set -euo pipefail
PY=${PY:-.venv/bin/python}
D=${1:-outputs/short_model_card}
N=${2:-256}
CKPT=${CKPT:-data/checkpoints/mmnist_short.safetensors}
mkdir -p "$D"
$PY -m lvdm_ref data moving-mnist --num "$N" --frames 16 --size 64 --digits 2 --split test --seed 1 --out "$D/real_a.npz" | tail -1
$PY -m lvdm_ref data moving-mnist --num "$N" --frames 16 --size 64 --digits 2 --split test --seed 2 --out "$D/real_b.npz" | tail -1
$PY - "$D" "$CKPT" <<'PY'
import sys
import numpy as np
import torch
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.utils import from_uint8, to_uint8
folder, ckpt = sys.argv[1], sys.argv[2]
vae = LatentVideoDiffusion.load(ckpt).vae  # the autoencoder the model was trained on: its ceiling
real_b = np.load(f"{folder}/real_b.npz")["videos"]
with torch.no_grad():
    recon = np.concatenate([to_uint8(vae.reconstruct(from_uint8(real_b[i:i + 16]))) for i in range(0, len(real_b), 16)])
np.savez_compressed(f"{folder}/reconstructed_b.npz", videos=recon)
PY
echo "== sample"
$PY -m lvdm_ref sample --ckpt "$CKPT" --num "$N" --sampler ddim --steps 50 --eta 1.0 --seed 0 --out "$D/generated.npz" 2>/dev/null | tail -1
for fake in real_b reconstructed_b generated; do
  echo "== $fake"
  $PY -m lvdm_ref fvd --real "$D/real_a.npz" --fake "$D/$fake.npz" --num "$N" 2>/dev/null | tail -1 | tee "$D/fvd_$fake.json"
done
# everything above in one file: $D/card.json (I3D features are cached by file contents, so a second
# checkpoint scored in another folder recomputes only its own samples' features)
$PY - "$D" "$CKPT" <<'PY'
import json
import sys
from pathlib import Path
from lvdm_ref.utils import file_sha256
from lvdm_ref.lvdm import LatentVideoDiffusion
folder, ckpt = Path(sys.argv[1]), sys.argv[2]
metadata = LatentVideoDiffusion.load(ckpt).metadata
card = {"checkpoint": ckpt, "sha256": file_sha256(ckpt), "steps": metadata.get("steps"),
        "sampler": "ddim, 50 steps, eta 1, seed 0",
        **{name: json.loads((folder / f"fvd_{name}.json").read_text()) for name in ("real_b", "reconstructed_b", "generated")}}
(folder / "card.json").write_text(json.dumps(card, indent=1) + "\n")
print(json.dumps({name: round(card[name]["fvd"], 2) for name in ("real_b", "reconstructed_b", "generated")}))
PY
