"""Test set-up shared by every test file."""
import os

# OpenMP threads that spin while waiting for work slow a shared 2-core machine down many times over
# (measured: benchmarks/unet_speed.py). Must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
