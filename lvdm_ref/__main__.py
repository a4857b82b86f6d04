import os

# Before torch loads OpenMP: spinning idle threads cost a lot on small shared machines
# (benchmarks/unet_speed.py measures it). Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lvdm_ref.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
