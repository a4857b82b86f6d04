"""The official LVDM code's released weights (Sky and TaiChi short models), run by this project.

- `autoencoder.py`: the official 3D autoencoder as a second autoencoder class (the project's own, `vae3d.py`, is
  a different network).
- `convert.py`: read a released Lightning `.ckpt` safely and write one project checkpoint (UNet with
  `norm="clip"`, `temporal_attention="lvdm"`, and the autoencoder inside) that `LatentVideoDiffusion.load`,
  `sample` and `fvd` use as they are.
- `closed_form.py`: name-determined weights for the offline tests against the official code's outputs.
docs/OFFICIAL_WEIGHTS.md says what is released and how to convert, sample and score the models.
"""
