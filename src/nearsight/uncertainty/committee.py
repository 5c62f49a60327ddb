"""A committee of models as one ASE calculator (mean and σ), and committee predictions on frames."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from torch import nn

from .. import keys
from ..data.neighbours import atoms_to_graph
from ..guards import MIN_DISTANCE, ExtrapolationMonitor, check_distances, check_finite
from ..models.forcefield import ForceField
from .aleatoric import aleatoric_log_variances

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class EnsembleCalculator(Calculator):
    """ASE calculator for a committee of nearsight models (objects or model file paths)."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        models: Sequence[nn.Module | str | os.PathLike],
        dtype: str = "float64",
        device: str = "cpu",
        sigma_scale: float = 1.0,
        aleatoric: nn.Module | str | os.PathLike | None = None,
        min_distance: float = MIN_DISTANCE,
        on_extrapolation: str = "warn",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.min_distance = float(min_distance)
        self.extrapolation = ExtrapolationMonitor(on_extrapolation)
        if len(models) < 2:
            raise ValueError(f"EnsembleCalculator needs at least 2 models, got {len(models)}")
        if not sigma_scale > 0:
            raise ValueError(f"sigma_scale must be > 0, got {sigma_scale!r}")
        from ..models.io import load_model

        self.dtype = _DTYPES[dtype]
        self.device = torch.device(device)
        self.sigma_scale = float(sigma_scale)
        self.members = []
        for i, m in enumerate(models):
            model = load_model(m) if isinstance(m, (str, os.PathLike)) else copy.deepcopy(m)
            if getattr(model, "metadata", {}).get("delta") is not None:
                raise ValueError(f"committee member {i} ({m!r}) is a Δ-model; not supported in a committee")
            ff = ForceField(model).to(device=self.device, dtype=self.dtype).eval()
            for p in ff.parameters():
                p.requires_grad_(False)
            self.members.append(ff)
        cutoffs = {float(ff.cutoff) for ff in self.members}
        self._cutoff = max(cutoffs)
        self.aleatoric = None
        if aleatoric is not None:
            head = (
                load_model(aleatoric)
                if isinstance(aleatoric, (str, os.PathLike))
                else copy.deepcopy(aleatoric)
            )
            if not getattr(head, "metadata", {}).get("aleatoric"):
                raise ValueError(f"aleatoric={aleatoric!r} is not a head made by fit_aleatoric_head")
            self.aleatoric = head.to(device=self.device, dtype=self.dtype).eval()

    @property
    def cutoff(self) -> float:
        return self._cutoff

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        graph = atoms_to_graph(atoms, self.cutoff, self.dtype)
        check_distances(atoms, graph, self.min_distance)
        graph = {k: v.to(self.device) for k, v in graph.items()}
        energies, atomic, forces, stresses, counts = [], [], [], [], []
        for m, ff in enumerate(self.members):
            g = {k: v.clone() for k, v in graph.items()}
            if ff.cutoff < self.cutoff:  # a member with a shorter cutoff: its own neighbour list
                g = {k: v.to(self.device) for k, v in atoms_to_graph(atoms, ff.cutoff, self.dtype).items()}
            out = ff(g, forces=True, stress=periodic)
            energies.append(float(out[keys.ENERGY].detach().sum()))
            atomic.append(out[keys.ATOMIC_ENERGIES].detach().cpu().double().numpy())
            forces.append(out[keys.FORCES].detach().cpu().double().numpy())
            member = {"energy": energies[-1], "energies": atomic[-1], "forces": forces[-1]}
            if periodic:
                stresses.append(
                    full_3x3_to_voigt_6_stress(out[keys.STRESS][0].detach().cpu().double().numpy())
                )
                member["stress"] = stresses[-1]
            check_finite(atoms, graph, member, where=f"committee member {m}")
            if keys.EXTRAPOLATION in out:
                counts.append(out[keys.EXTRAPOLATION].detach().cpu().double().numpy())
        extrapolation = self.extrapolation.report(atoms, np.max(counts, axis=0) if counts else None)
        e = np.asarray(energies)
        f = np.stack(forces)
        s = self.sigma_scale
        atom_std = np.sqrt(f.var(axis=0).sum(axis=1)) * s
        self.results = {
            "energy": float(e.mean()),
            "free_energy": float(e.mean()),
            "energies": np.mean(atomic, axis=0),
            "forces": f.mean(axis=0),
            "energy_std": float(e.std()) * s,
            "forces_std": f.std(axis=0) * s,
            "atom_force_std": atom_std,
            "max_force_std": float(atom_std.max()) if len(atom_std) else 0.0,
            "energy_members": e,
            "forces_members": f,
            "sigma_scale": s,
            **extrapolation,
        }
        if self.aleatoric is not None:
            g = {
                k: v.to(self.device)
                for k, v in atoms_to_graph(atoms, self.aleatoric.cutoff, self.dtype).items()
            }
            with torch.no_grad():
                logvar = aleatoric_log_variances(self.aleatoric, g).cpu().double().numpy()
            self.results["energy_aleatoric_std"] = float(np.sqrt(np.exp(logvar[:, 0]).sum()))
            self.results["forces_aleatoric_std"] = np.sqrt(np.exp(logvar[:, 1]))
        if periodic:
            st = np.stack(stresses)
            self.results["stress"] = st.mean(axis=0)
            self.results["stress_std"] = st.std(axis=0) * s


def predict_committee(
    models: Sequence[nn.Module],
    frames: Sequence,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float64,
) -> list[dict[str, np.ndarray]]:
    """Committee mean and spread per frame, batched (:func:`nearsight.training.metrics.predict`).

    Each dict has the mean ``energy``, ``forces`` (and ``stress`` for 3D-periodic frames), as
    :class:`EnsembleCalculator` predicts them, and ``energy_std``, ``forces_std`` (per
    component) and ``atom_force_std`` (per atom, the norm of the component standard deviations).
    """
    from ..training.metrics import predict

    if len(models) < 2:
        raise ValueError(f"predict_committee needs at least 2 models, got {len(models)}")
    preds = [predict(m, frames, batch_size=batch_size, dtype=dtype) for m in models]
    out = []
    for i in range(len(frames)):
        e = np.array([p[i]["energy"] for p in preds], dtype=float)
        f = np.stack([p[i]["forces"] for p in preds])
        row = {
            "energy": float(e.mean()),
            "forces": f.mean(axis=0),
            "energy_std": float(e.std()),
            "forces_std": f.std(axis=0),
            "atom_force_std": np.sqrt(f.var(axis=0).sum(axis=1)),
        }
        if all("stress" in p[i] for p in preds):
            st = np.stack([p[i]["stress"] for p in preds])
            row["stress"], row["stress_std"] = st.mean(axis=0), st.std(axis=0)
        out.append(row)
    return out
