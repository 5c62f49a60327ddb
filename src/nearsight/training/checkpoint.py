"""Training checkpoints: everything needed to continue a run bit for bit.

A checkpoint is a dict of plain values and tensors (loadable with
``torch.load(weights_only=True)``)::

    {"format": "nearsight-checkpoint", "format_version": 1,
     "model": <model file dict>, "optimizer": ..., "scheduler": ... | None,
     "ema": ... | None, "rng": {"torch": ByteTensor, "data": ByteTensor},
     "loop": {"epoch", "step_in_epoch", "global_step", "order", "best", "best_epoch",
              "elapsed_s", "running", "seen", "stage"},
     "config": {...}, "loss": {...}}

It is written with :func:`~nearsight.models.io.atomic_torch_save` (temporary file, fsync,
rename), so a kill at any moment leaves the previous checkpoint or the new one, never a
truncated file.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..models.io import atomic_torch_save, model_to_dict, read_weights_only

FORMAT = "nearsight-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not belong to this run."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    return atomic_torch_save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r} to resume from")
    state = read_weights_only(path, "checkpoint", CheckpointError)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r}: not a nearsight training checkpoint")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r}: checkpoint format {state.get('format_version')} (this nearsight reads {FORMAT_VERSION})"
        )
    return state


def comparable_config(config: dict) -> dict:
    """The parts of a config that must not change across a resume (run length and logging may)."""
    from .config import SCHEMA, ConfigError, validate_config

    try:  # the defaults and normal forms of today's code on both sides (keys added since, e.g.
        # model.longrange.charges: head, compare equal)
        config = validate_config(copy.deepcopy(config), source="<checkpoint>")
    except ConfigError:
        pass
    free = {
        "epochs", "max_steps", "max_time_minutes", "time_limit_clock", "log_every", "checkpoint_every", "tensorboard",
    }  # fmt: skip
    out = {k: v for k, v in config.items() if k not in ("training", "output_dir", "num_threads")}
    out["training"] = {k: v for k, v in config["training"].items() if k not in free}
    # keys left at None or at their default compare as absent: a checkpoint written before a key
    # existed still resumes
    return {
        k: {a: b for a, b in v.items() if b is not None and b != SCHEMA.get(k, {}).get(a, (0, None))[1]}
        if isinstance(v, dict)
        else v
        for k, v in out.items()
    }


def training_state(
    model: nn.Module, metadata: dict, optimisation, gen: torch.Generator, loop: dict, loss, config: dict
) -> dict:
    """Everything a checkpoint holds (see the module docstring) for the run's current state."""
    return {
        "model": model_to_dict(model, metadata),
        **optimisation.state_dict(),  # optimizer, scheduler, ema
        "rng": {"torch": torch.get_rng_state(), "data": gen.get_state()},
        "loop": dict(loop),
        "config": config,
        "loss": loss.state_dict(),
        "reference_energies": metadata["reference_energies"],
    }


def restore_training_state(state: dict, optimisation, gen: torch.Generator, source: str) -> dict:
    """Optimiser, scheduler, EMA and random states from a checkpoint; returns its loop state."""
    optimisation.load_state_dict(state, source)
    torch.set_rng_state(state["rng"]["torch"])
    gen.set_state(state["rng"]["data"])
    return dict(state["loop"])


def finished_reason(loop: dict, training: dict, out_dir: Path) -> str | None:
    """Why a run with checkpoint loop state ``loop`` has nothing left to do within ``training``'s
    budget, or None.

    It has when its outputs are complete (``training_summary.json`` of the checkpoint's step,
    ``final_model.pt``, ``best_model.pt``) and the checkpoint shows every epoch done, or the
    summary says it stopped by early stopping, or by ``max_steps`` / ``max_time_minutes`` that
    the config has not raised.  A run killed before its summary is finished off instead.
    """
    summary_path = out_dir / "training_summary.json"
    if not all(p.is_file() for p in (summary_path, out_dir / "final_model.pt", out_dir / "best_model.pt")):
        return None
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return None
    t = training
    if summary.get("steps") != loop["global_step"]:  # the summary of an earlier stop
        return None
    reason = summary.get("stopped_by")
    if loop["epoch"] > t["epochs"]:
        return f"all {t['epochs']} epochs done"
    if reason == "early_stopping":
        return f"early stopping after epoch {loop['epoch'] - 1} (best epoch {loop['best_epoch']})"
    if reason == "max_steps" and t["max_steps"] is not None and loop["global_step"] >= t["max_steps"]:
        return f"max_steps {t['max_steps']} reached"
    limit = t["max_time_minutes"]
    if reason == "max_time" and limit is not None and loop["elapsed_s"] > 60 * limit:
        return f"max_time_minutes {limit} reached"
    return None
