"""Aleatoric uncertainty: a heteroscedastic head trained by the Gaussian NLL of a frozen model's residuals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .. import keys
from ..data.neighbours import atoms_to_graph

if TYPE_CHECKING:
    from .committee import EnsembleCalculator


def aleatoric_log_variances(head: nn.Module, graph: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[n_atoms, 2]``: log σ²_E,i and log σ²_F,i of every atom from a head of :func:`fit_aleatoric_head`."""
    from ..models.bpnn import element_indices

    graph = _with_edge_vectors(graph)
    element = element_indices(head.z_to_index, graph[keys.ATOMIC_NUMBERS], head.species)
    x = head.standardise(head.features(graph))
    out = x.new_zeros((x.shape[0], 2))
    for k, net in enumerate(head.nets):
        idx = torch.nonzero(element == k).squeeze(-1)
        if idx.numel():
            out = out.index_put((idx,), net(x[idx]))
    return out.clamp(-30.0, 20.0)


def _with_edge_vectors(graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from ..models.forcefield import edge_vectors

    if keys.EDGE_VECTORS in graph:
        return graph
    out = dict(graph)
    out[keys.EDGE_VECTORS] = edge_vectors(
        graph[keys.POSITIONS],
        graph[keys.CELL],
        graph[keys.BATCH],
        graph[keys.EDGE_INDEX],
        graph[keys.CELL_SHIFTS],
    )
    return out


def fit_aleatoric_head(
    mean: nn.Module | EnsembleCalculator | Sequence,
    frames: Sequence,
    hidden: Sequence[int] = (16,),
    epochs: int = 400,
    lr: float = 0.01,
    seed: int = 0,
    energy_key: str = "energy",
    forces_key: str = "forces",
) -> nn.Module:
    """Train a heteroscedastic head on the residuals of ``mean`` (a model, a list of models, or an
    :class:`EnsembleCalculator`: its committee mean) over ``frames`` (ASE Atoms with
    ``info[energy_key]`` and ``arrays[forces_key]``) by full-batch Gaussian NLL minimisation.

    The head reuses the descriptor settings of the first (Behler-Parrinello) mean model and its
    feature standardisation; returns a BehlerParrinello with heads ``["energy_logvar",
    "forces_logvar"]`` and ``metadata["aleatoric"] = True`` (save with ``save_model``).
    """
    from ..models.bpnn import BehlerParrinello
    from .committee import EnsembleCalculator

    calc = mean if isinstance(mean, EnsembleCalculator) else None
    if calc is None:
        models = list(mean) if isinstance(mean, Sequence) else [mean]
        calc = EnsembleCalculator(models * 2 if len(models) == 1 else models)
    base = calc.members[0].model
    if not isinstance(base, BehlerParrinello):
        raise TypeError(f"fit_aleatoric_head needs a Behler-Parrinello mean model, got {type(base).__name__}")
    if not frames:
        raise ValueError("fit_aleatoric_head: no frames")
    cfg = base.get_config()
    torch.manual_seed(seed)
    head = BehlerParrinello(
        cfg["species"], cfg["descriptor"], hidden, base.activation, heads=["energy_logvar", "forces_logvar"]
    ).double()
    for name in ("feature_mean", "feature_std", "feature_mask", "feature_min", "feature_max"):
        head.get_buffer(name).copy_(base.get_buffer(name).double())
    feats, elems, r_e, r_f, batch = [], [], [], [], []
    for i, atoms in enumerate(frames):
        ref_e = atoms.info.get(energy_key)
        ref_f = atoms.arrays.get(forces_key)
        if ref_e is None or ref_f is None:
            raise ValueError(
                f"fit_aleatoric_head: frame {i} has no info[{energy_key!r}] or arrays[{forces_key!r}]"
            )
        calc.calculate(atoms.copy(), ["energy", "forces"])
        r_e.append(float(ref_e) - calc.results["energy"])
        r_f.append(torch.as_tensor(np.asarray(ref_f) - calc.results["forces"]))
        g = _with_edge_vectors(atoms_to_graph(atoms, head.cutoff, torch.float64))
        with torch.no_grad():
            feats.append(head.standardise(head.features(g)))
        elems.append(torch.as_tensor([head.species.index(int(z)) for z in atoms.numbers]))
        batch.append(torch.full((len(atoms),), i, dtype=torch.int64))
    x, element, batch = torch.cat(feats), torch.cat(elems), torch.cat(batch)
    r_e = torch.tensor(r_e, dtype=torch.float64)
    r_f = torch.cat(r_f).double()
    n_frames = len(frames)
    n_atoms = torch.bincount(batch, minlength=n_frames).double()
    with torch.no_grad():  # start at the average residual variance
        for net in head.nets:
            last = net[-1]
            last.weight.mul_(0.1)
            last.bias.copy_(
                torch.tensor(
                    [
                        math.log(float((r_e**2 / n_atoms).mean()) + 1e-12),
                        math.log(float((r_f**2).mean()) + 1e-12),
                    ]
                )
            )
    params = [p for net in head.nets for p in net.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        out = x.new_zeros((x.shape[0], 2))
        for k, net in enumerate(head.nets):
            idx = torch.nonzero(element == k).squeeze(-1)
            if idx.numel():
                out = out.index_put((idx,), net(x[idx]))
        out = out.clamp(-30.0, 20.0)
        var_e = torch.zeros(n_frames, dtype=torch.float64).index_add_(0, batch, out[:, 0].exp())
        nll_e = 0.5 * (var_e.log() + r_e**2 / var_e)
        nll_f = 0.5 * (out[:, 1:2] + r_f**2 / out[:, 1:2].exp())  # [n_atoms, 3]
        per_frame_f = torch.zeros(n_frames, dtype=torch.float64).index_add_(0, batch, nll_f.sum(1)) / (
            3 * n_atoms
        )
        loss = (nll_e + per_frame_f).mean()
        loss.backward()
        opt.step()
    head.metadata = {"aleatoric": True, "final_nll": float(loss.detach()), "n_frames": n_frames}
    return head.eval()


# ------------------------------------------------------------------------------------------ calibration
