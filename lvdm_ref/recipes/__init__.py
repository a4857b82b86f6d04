"""What to train and how: model + data + trainer for each command (no model is defined here).

Each recipe builds a model of a preset's size (`config.py`), makes its training data, and hands both,
with the loss its model file defines, to the model-agnostic `Trainer` (`train.py`). The commands
`train-vae` and `train` call them, and so do the notebooks and the benchmark studies.

- `train_autoencoder`: the 3D autoencoder (`vae3d.py`, LVDM Sec. 3.1) on fresh Moving MNIST clips, or on
  random clips of real video (`video_training.py`).
- `train_short_model`: the short LVDM (`lvdm.py`, Sec. 3.2) on the latents of a frozen autoencoder.
- `train_pixel_model`: the same UNet and diffusion on the pixels (`pixel.py`, the Sec. 4 ablation).
- `train_hierarchy_model`: the long-video prediction or interpolation model (`hierarchy.py`, Sec. 3.3)
  on the keyframes or the 5-latent windows of long encoded clips.
- `train_t2v_model`: the caption-conditioned short model with classifier-free guidance (`text_to_video.py`,
  beyond the paper), warm-started from a short model, on clips with 1, 2 and 3 digits and their captions.

Training data for the diffusion models: clips are encoded once, up front, into a latent set kept in
memory (and cached in the run folder, so a resumed run does not encode again). Encoding is a
full-resolution 3D conv pass, far dearer per clip than a UNet step on the small latent; a fixed set
keeps it off the training loop.

Each recipe is two steps: `resolve_*` checks the whole run in seconds, from the checkpoints' headers and
the data's file headers, and returns what the run needs (an `AutoencoderRun`, `ShortRun` or
`HierarchyRun`); `fit_*` only works. The `train_*` functions are the two in a row; the commands call them
apart, so that a bad argument is refused before any model loads.
"""
from lvdm_ref.recipes.autoencoder import AutoencoderRun, fit_autoencoder, resolve_autoencoder_run, train_autoencoder
from lvdm_ref.recipes.common import (LatentDataset, encoded_training_set, preset_for_autoencoder, short_model_header,
                                     short_model_weights, training_clips)
from lvdm_ref.recipes.hierarchy import (HierarchyRun, build_hierarchy_model, fit_hierarchy, long_clip_frames,
                                        resolve_hierarchy_run, train_hierarchy_model, training_latents)
from lvdm_ref.recipes.short import (ShortRun, caption_training_set, fit_diffusion, fit_short, fit_t2v,
                                    resolve_short_run, train_pixel_model, train_short_model, train_t2v_model)

__all__ = ["AutoencoderRun", "HierarchyRun", "LatentDataset", "ShortRun", "build_hierarchy_model",
           "caption_training_set", "encoded_training_set", "fit_autoencoder", "fit_diffusion", "fit_hierarchy",
           "fit_short", "fit_t2v", "long_clip_frames", "preset_for_autoencoder", "resolve_autoencoder_run",
           "resolve_hierarchy_run", "resolve_short_run", "short_model_header", "short_model_weights",
           "train_autoencoder", "train_hierarchy_model", "train_pixel_model", "train_short_model",
           "train_t2v_model", "training_clips", "training_latents"]
