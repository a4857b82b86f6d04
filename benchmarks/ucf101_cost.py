"""What the `ucf101` preset needs on one GPU, estimated from FLOPs and saved activations (no GPU needed).

    python benchmarks/ucf101_cost.py [--tflops 100] [--out benchmarks/results/ucf101_cost.json]

Prints one JSON object. The models are built on PyTorch's meta device (shapes only, no memory, no
arithmetic), and one training step on one clip is traced:

- FLOPs: torch's `FlopCounterMode` (`profiling.flop_counter`) over forward + backward (convolutions,
  matmuls and attention; element-wise ops are not counted, so this is a floor);
- activations: the bytes of every tensor autograd saves for the backward pass (float32), a good
  estimate of the activation memory of a step; bf16 autocast (on by default on a GPU) roughly halves it;
- weights, gradients and AdamW's two moments: 16 bytes per parameter (+4 for the EMA copy).

Seconds per step = FLOPs per step / the sustained throughput `--tflops` (default 100 TFLOP/s: about a
third of an A100's bf16 peak, a common figure for 3D convolutions). These are estimates: measure on a
GPU (`train-vae --preset ucf101 --data ... --steps 50`, the trainer logs seconds per step) when you have one.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from lvdm_ref.config import get_preset  # noqa: E402
from lvdm_ref.profiling import flop_counter  # noqa: E402
from lvdm_ref.unet import UNet  # noqa: E402
from lvdm_ref.vae3d import AutoencoderWithLoss  # noqa: E402


def trace(model: torch.nn.Module, loss_fn) -> tuple[float, float]:
    """(GFLOP, GiB saved for backward) of one forward + backward of `loss_fn(model)` on the meta device."""
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[id(tensor)] = tensor.numel() * tensor.element_size()  # each saved tensor once
        return tensor

    with flop_counter() as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss_fn(model).backward()
    return counter.get_total_flops() / 1e9, sum(saved.values()) / 2**30


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflops", type=float, default=100.0, help="assumed sustained TFLOP/s of the GPU")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    preset = get_preset("ucf101")
    data = preset.data
    with torch.device("meta"):
        clip = torch.randn(1, data.channels, data.num_frames, data.size, data.size)  # (1, C, F, H, W)
        vae = AutoencoderWithLoss(preset.vae)

        def vae_step(model: AutoencoderWithLoss) -> torch.Tensor:  # after disc_start: L1 + both GAN terms
            reconstruction = model.autoencoder(clip)[0]
            return ((reconstruction - clip).abs().mean() + model.discriminator(reconstruction).mean()
                    + model.discriminator(clip).mean())

        vae_gflop, vae_gib = trace(vae, vae_step)
        down_t, down_s = preset.vae.temporal_downsample, preset.vae.spatial_downsample
        latent = torch.randn(1, preset.vae.latent_channels, data.num_frames // down_t, data.size // down_s,
                             data.size // down_s)  # (1, c, f, h, w)
        unet = UNet(preset.unet)
        unet_gflop, unet_gib = trace(unet, lambda model: model(latent, torch.tensor([500])).sum())
        encode_gflop, _ = trace(vae, lambda model: model.autoencoder.encoder(clip).sum())  # forward + backward
    result = {"preset": "ucf101", "clip": list(clip.shape[1:]), "latent": list(latent.shape[1:]),
              "assumed_tflops": args.tflops, "estimate": True}
    for name, model, gflop, gib, train in (("autoencoder", vae, vae_gflop, vae_gib, preset.vae_train),
                                           ("short_unet", unet, unet_gflop, unet_gib, preset.train)):
        params = sum(p.numel() for p in model.parameters())
        step_tflop = gflop * train.batch_size / 1e3
        seconds = step_tflop / args.tflops
        state_gib = params * (16 + 4 * (train.ema_decay > 0)) / 2**30
        result[name] = {"params_millions": round(params / 1e6, 2), "gflop_per_clip": round(gflop, 1),
                        "batch_size": train.batch_size, "tflop_per_step": round(step_tflop, 2),
                        "activations_gib_fp32": round(gib * train.batch_size, 1),
                        "weights_grads_adam_ema_gib": round(state_gib, 2),
                        "seconds_per_step": round(seconds, 3), "steps": train.steps,
                        "hours": round(seconds * train.steps / 3600, 1)}
    # Encoding the latent set: the encoder's forward only, a third of its forward + backward.
    encode_seconds = encode_gflop / 3 * data.num_train / 1e3 / args.tflops
    result["latent_set"] = {"clips": data.num_train, "minutes": round(encode_seconds / 60, 1)}
    text = json.dumps(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
