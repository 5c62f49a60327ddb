"""D3 dispersion taken out of the labels when the data are loaded, and put back into the saved model.

With ``data.dispersion`` (the keyword arguments of :class:`~nearsight.longrange.Dispersion`, e.g.
``{functional: pbe}``) every frame of the training, validation and test splits gets

    E' = E − E_D3,    F'_i = F_i − F_D3,i,    σ' = σ − σ_D3,    F_D3,i = −∂E_D3/∂R_i,   σ_D3 = (1/V) ∂E_D3/∂ε

(the stress only where a frame carries a stress label), with E_D3 the DFT-D3(BJ) energy of the frame
evaluated once, in float64, through :class:`~nearsight.models.forcefield.ForceField` (forces and
stress by autograd through its strain path, as the model's own).  The network learns E', F', σ'
and training never evaluates D3 again.  The model that is saved (best and final model files, which
``nearsight evaluate``, the ASE calculator and MD load) is
:class:`~nearsight.longrange.model.LongRangePotential` ``(short, dispersion=the same settings)``
(with the run's Coulomb term kept, if any): it predicts E' + E_D3, comparable to the original
labels.  Because E_D3 is exact, the errors of the short-range model against E', F', σ' during
training are those of the full model against E, F, σ (up to round-off in the training dtype); the
metrics of the best model at the end of a run are computed with the full model on the original
labels.  Checkpoints hold the model being trained (without D3); a resumed run subtracts the same
D3 from the same frames again.  Nothing is cached on disk.

``data.dispersion`` and ``model.longrange.dispersion`` exclude each other: with both, D3 would be
subtracted from the labels and still be evaluated inside the trained model, counted twice in the
saved one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .. import keys
from ..data.frame import Frame
from ..data.neighbours import collate, frame_to_graph
from ..models.forcefield import ForceField

DISPERSION_INFO = "dispersion_energy"
"""``Frame.info`` key of the D3 energy (eV) subtracted from a frame's energy label."""

ALLOWED_KEYS = ("functional", "damping", "parameters", "cutoff", "cn_cutoff", "taper")
"""Keys of ``data.dispersion``: the arguments of :class:`~nearsight.longrange.Dispersion`."""

_GRAPH_CUTOFF = 1.0  # Å: the (unused) edges of the graphs D3 runs on; D3 builds its own pair list.
# Not smaller: vesin's cell list gets slow for tiny cutoffs (18 ms per ethanol at 1e-3 Å, 0.15 ms at 1 Å)


def check_dispersion_settings(spec: object, model_longrange: dict | None) -> dict:
    """``data.dispersion`` checked and normalised (raises ``ValueError`` naming the key).

    ``functional`` is required (the functional of the labels); the other keys are optional.  Every
    value is checked by building the :class:`~nearsight.longrange.Dispersion` term once.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"must be a mapping such as {{functional: pbe}}, got {spec!r}")
    unknown = sorted(set(spec) - set(ALLOWED_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; allowed: {list(ALLOWED_KEYS)}")
    if "functional" not in spec:
        raise ValueError(
            "functional is required: the density functional of the labels (e.g. functional: pbe)"
        )
    if model_longrange is not None and model_longrange.get("dispersion") not in (None, False):
        raise ValueError(
            "model.longrange.dispersion is also given: D3 would be subtracted from the labels and still be "
            "evaluated in every training step, and counted twice in the saved model; keep one of the two "
            "(data.dispersion: subtracted once at load time and added back in the saved model)"
        )
    from ..longrange import Dispersion

    try:
        Dispersion(**spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from exc
    return dict(spec)


class _DispersionOnly(nn.Module):
    """:class:`~nearsight.longrange.Dispersion` as a per-atom energy model for ``ForceField``."""

    def __init__(self, settings: dict) -> None:
        super().__init__()
        from ..longrange import Dispersion

        self.dispersion = Dispersion(**settings)
        self.cutoff = _GRAPH_CUTOFF
        self.species: list[int] = []

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {keys.ATOMIC_ENERGIES: self.dispersion(graph)}


def dispersion_labels(
    frames: Sequence[Frame], settings: dict, batch_size: int = 16
) -> list[tuple[float, np.ndarray, np.ndarray | None]]:
    """(E_D3 (eV), F_D3 ``[n_atoms, 3]`` (eV/Å), σ_D3 ``[3, 3]`` (eV/Å³, ASE sign) or None) of each
    frame, in float64; the stress only for frames with a stress label."""
    forcefield = ForceField(_DispersionOnly(settings)).double()
    out: list[tuple[float, np.ndarray, np.ndarray | None]] = []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start : start + batch_size]
        batch = collate([frame_to_graph(f, _GRAPH_CUTOFF, torch.float64, labels=False) for f in chunk])
        stress = any(f.stress is not None for f in chunk)
        with torch.enable_grad():
            result = forcefield(batch, forces=True, stress=stress)
        energy = result[keys.ENERGY].detach().numpy()  # [n_graphs]
        forces = result[keys.FORCES].detach().numpy()  # [n_atoms, 3]
        offset = 0
        for g, frame in enumerate(chunk):
            f_d3 = forces[offset : offset + frame.n_atoms].copy()
            offset += frame.n_atoms
            s_d3 = result[keys.STRESS][g].detach().numpy().copy() if frame.stress is not None else None
            out.append((float(energy[g]), f_d3, s_d3))
    return out


def subtract_dispersion(frames: Sequence[Frame], settings: dict) -> list[Frame]:
    """Copies of ``frames`` with E_D3, F_D3 and σ_D3 subtracted from the labels they carry; the
    subtracted energy is kept in ``info[DISPERSION_INFO]`` (eV)."""
    new = []
    for frame, (e_d3, f_d3, s_d3) in zip(frames, dispersion_labels(frames, settings), strict=True):
        new.append(
            dataclasses.replace(
                frame,
                energy=None if frame.energy is None else frame.energy - e_d3,
                forces=None if frame.forces is None else frame.forces - f_d3,
                stress=None if frame.stress is None else frame.stress - s_d3,
                info={**frame.info, DISPERSION_INFO: e_d3},
            )
        )
    return new


def mean_dispersion_per_atom(frames: Sequence[Frame]) -> float:
    """Mean over frames of |E_D3| / n_atoms (eV/atom) of frames made by :func:`subtract_dispersion`."""
    values = [abs(f.info[DISPERSION_INFO]) / max(f.n_atoms, 1) for f in frames if DISPERSION_INFO in f.info]
    return float(np.mean(values)) if values else 0.0


def with_dispersion(model: nn.Module, settings: dict) -> nn.Module:
    """The model to save: ``model`` (a short-range model, or a long-range one without D3) with the D3
    term of ``settings`` added, sharing ``model``'s modules (so its current weights, EMA included)."""
    from ..longrange.model import LongRangePotential

    if isinstance(model, LongRangePotential):
        if model.dispersion is not None:
            raise ValueError("the model already has a dispersion term: D3 would be counted twice")
        return model.with_dispersion(settings)
    return LongRangePotential(model, None, settings)


def without_dispersion(model: nn.Module) -> nn.Module:
    """The inverse of :func:`with_dispersion`: ``model`` without its D3 term (sharing its modules);
    a model without one is returned as it is."""
    from ..longrange.model import LongRangePotential

    if not isinstance(model, LongRangePotential) or model.dispersion is None:
        return model
    if model.coulomb is None and model.repulsion is None:
        return model.short
    return model.with_dispersion(None)
