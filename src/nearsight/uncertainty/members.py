"""Training the members of a committee: seeds, bootstrap resamples, finished and interrupted members."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from .._files import atomic_write


def train_committee(
    config: dict,
    n_members: int,
    output_dir: str | os.PathLike | None = None,
    bootstrap: bool = False,
    log=None,
) -> list[Path]:
    """Train ``n_members`` models with seeds ``seed + k`` (k = 0..n-1); returns the best-model paths.

    Member k trains in ``output_dir/member_k`` (default: the config's output_dir).  A member
    that finished (:func:`member_finished`) is not retrained; one interrupted mid-training starts
    over (same seed: the same model).  The seed also draws the validation split off ``data.train``
    unless ``data.split_seed`` fixes it (members then see the same frames and differ in
    initialisation and batch order only).  ``bootstrap``: member k trains on a resample with
    replacement (seeded by k) of the training frames, written to ``member_k/bootstrap.xyz``.
    """
    from ..training.trainer import Trainer

    if n_members < 2:
        raise ValueError(f"train_committee: n_members must be >= 2, got {n_members}")
    root = Path(output_dir if output_dir is not None else config["output_dir"])
    paths = []
    for k in range(n_members):
        member_dir = root / f"member_{k}"
        best = member_dir / "best_model.pt"
        paths.append(best)
        if not restart_member(member_dir):
            continue
        cfg = copy.deepcopy(config)
        cfg["seed"] = int(config["seed"]) + k
        cfg["output_dir"] = str(member_dir)
        if bootstrap:
            cfg["data"]["train"] = str(_bootstrap_file(config, member_dir, seed=1000 + k))
            if not cfg["data"]["valid"]:
                cfg["data"]["valid"] = config["data"]["train"]
        Trainer(cfg, log=log).train()
        if not best.is_file():  # pragma: no cover - Trainer always writes it
            raise RuntimeError(f"train_committee: member {k} wrote no {best}")
    return paths


def member_finished(member_dir: Path) -> bool:
    """Whether the training in ``member_dir`` ran to its end.

    ``best_model.pt`` alone does not say so: the trainer writes it at every validation
    improvement, so a run killed mid-training leaves one.  ``final_model.pt`` is written
    once the loop has stopped (epochs, time limit or early stopping), and after it a best
    model only where none was written before the first validation.
    """
    member_dir = Path(member_dir)
    return (member_dir / "final_model.pt").is_file() and (member_dir / "best_model.pt").is_file()


def restart_member(member_dir: Path) -> bool:
    """False where ``member_dir`` holds a finished training; else empty it for a fresh start, True.

    A fresh start with the same seed and data trains the same model as the interrupted run
    would have, so a committee (or an active-learning iteration) is the same after a kill.
    """
    import shutil

    member_dir = Path(member_dir)
    if member_finished(member_dir):
        return False
    if member_dir.exists():
        shutil.rmtree(member_dir)
    member_dir.mkdir(parents=True)
    return True


def _bootstrap_file(config: dict, member_dir: Path, seed: int) -> Path:
    """A resample with replacement of the training frames, as extxyz (atomic write)."""
    import ase.io

    files = config["data"]["train"]
    files = [files] if isinstance(files, str) else list(files)
    atoms = [a for f in files for a in ase.io.read(f, index=":")]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(atoms), size=len(atoms))
    path = member_dir / "bootstrap.xyz"
    atomic_write(path, lambda fh: ase.io.write(fh, [atoms[i] for i in picks], format="extxyz"))
    return path


# ------------------------------------------------------------------------------------------ aleatoric
