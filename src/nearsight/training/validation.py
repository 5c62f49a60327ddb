"""Evaluation during and after training: the loss (total and per term) and error metrics on the
validation graphs, and the report of the best model on the validation and test splits with
parity plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .. import keys
from ..data.frame import Frame
from ..data.neighbours import collate
from ..models.forcefield import ForceField
from .loss import Loss
from .metrics import compute_metrics, compute_metrics_by_type, parity_plot, split_predictions


def evaluate(
    forcefield: torch.nn.Module, loss: Loss, graphs: Sequence[dict], stress: bool, batch_size: int
) -> tuple[float, dict[str, float], list[dict]]:
    """Mean loss per structure, the mean of each term, and per-frame predictions of ``graphs``."""
    total, n, preds = 0.0, 0, []
    terms = dict.fromkeys(loss.terms, 0.0)
    for start in range(0, len(graphs), batch_size):
        batch = collate(graphs[start : start + batch_size])
        out = {k: v.detach() for k, v in forcefield(batch, forces=True, stress=stress).items()}
        n_g = batch[keys.N_ATOMS].shape[0]
        total += float(loss(out, batch)) * n_g
        for name, value in loss.term_sums(out, batch).items():
            terms[name] += value
        n += n_g
        preds += split_predictions(out, batch)
    return total / max(n, 1), {k: v / max(n, 1) for k, v in terms.items()}, preds


def validation_pass(
    forcefield: torch.nn.Module, loss: Loss, frames: Sequence[Frame], graphs: Sequence[dict], batch_size: int
) -> tuple[float, dict]:
    """Validation loss and metrics (with ``loss_<term>`` for each term) from one pass."""
    stress = loss.needs_stress or any(f.pbc.all() for f in frames)
    value, terms, preds = evaluate(forcefield, loss, graphs, stress, batch_size)
    metrics = compute_metrics(frames, preds)
    metrics.update({f"loss_{name}": v for name, v in terms.items()})
    return value, metrics


def best_model_report(
    model: torch.nn.Module,
    loss: Loss,
    splits: Sequence[tuple[str, Sequence[Frame], Sequence[dict] | None]],
    out_dir: Path,
    graphs_of,
    batch_size: int,
) -> dict:
    """Metrics (overall and per config type) and a parity plot of ``model`` on each split.

    ``splits``: ``(name, frames, graphs or None)``; ``graphs_of(frames)`` builds missing graphs.
    Returns ``{"<name>_metrics": ...}`` for the splits that have frames.
    """
    forcefield = ForceField(model)
    summary = {}
    for name, frames, graphs in splits:
        if not frames:
            continue
        if graphs is None:
            graphs = graphs_of(frames)
        _, _, preds = evaluate(forcefield, loss, graphs, any(f.pbc.all() for f in frames), batch_size)
        summary[f"{name}_metrics"] = compute_metrics_by_type(frames, preds)
        parity_plot(frames, preds, out_dir / f"parity_{name}.png", title=f"{name} (best model)")
    return summary
