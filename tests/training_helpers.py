"""Small training configs shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "ethanol_train300.xyz"
# a small ACSF model: 4 radial, 2 x 2 angular functions per element pair, one hidden layer of 8
TINY_ACSF = {
    "cutoff": 3.5,
    "n_radial": 4,
    "n_angular_eta": 1,
    "n_angle_sections": 2,
    "n_angular_shifts": 2,
    "hidden": [8],
}


def tiny_config(out: Path, train: Path | str = TRAIN, **training: object) -> dict:
    """A small ACSF model on 12 ethanol frames (10 train, 2 valid), 3 steps per epoch at batch 4."""
    return {
        "seed": 0,
        "output_dir": str(out),
        "data": {"train": str(train), "max_train_frames": 12, "valid_fraction": 0.15},
        "model": {**TINY_ACSF},
        "training": {"epochs": 2, "batch_size": 4, "lr": 0.01, "log_every": 100, **training},
    }
