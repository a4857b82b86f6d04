"""lvdm_ref: a readable reference implementation of Latent Video Diffusion Models.

He, Yang, Zhang, Shan, Chen. *Latent Video Diffusion Models for High-Fidelity Long Video
Generation*, arXiv:2211.13221. One concept per module; docs/ARCHITECTURE.md is the map (reading path, data flow).
"""
__version__ = "0.1.0"
