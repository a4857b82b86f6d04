"""lvdm_ref: a readable reference implementation of Latent Video Diffusion Models.

He, Yang, Zhang, Shan, Chen. *Latent Video Diffusion Models for High-Fidelity Long Video
Generation*, arXiv:2211.13221. One concept per module; docs/ARCHITECTURE.md is the map (reading path, data flow).
"""
import os

# Idle OpenMP threads sleep instead of spinning (the Makefile and the command line set the same): next to other
# processes on a small CPU, spinning threads cost up to 3x the CPU for the same work. OpenMP reads this when torch
# loads, so import lvdm_ref first, as every notebook's first cell does; a value you set yourself is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
