"""ASE calculator for any nearsight model.

    from nearsight import NearsightCalculator
    atoms.calc = NearsightCalculator("model.pt", dtype="float64")
    atoms.get_potential_energy(); atoms.get_forces(); atoms.get_stress()

``results`` holds ``energy``, ``free_energy``, ``energies`` (per atom),
``forces`` and, for cells periodic in all three directions, ``stress``
(Voigt 6, eV/Å³, ASE sign).

A Δ-model (trained with ``data.baseline_energy_key``) predicts a correction to a
cheaper method; its calculator evaluates that baseline and returns the sum, so
``energy`` is the full high-level energy.  The baseline is the ASE calculator given
as ``baseline=``, or else the one the model file records (see
:mod:`nearsight.baselines`).  Then ``results`` also holds ``baseline_energy`` and
``delta_energy``, and ``energies`` only if the baseline provides per-atom energies.

A multi-head model answers with its last (most accurate) head unless ``head=`` names
another.

A model with charges (a long-range model) feels a uniform external electric field
``external_field=`` (three numbers, V/Å; else ``atoms.info["external_field"]``, else none): its
energy gets −μ·E (``results["field_energy"]``) and QEq charges polarise.  ``calc.set(external_field=...)``
changes it; a change of ``atoms.info["charge"]`` or ``atoms.info["external_field"]`` also makes the
calculator compute again.

A diabatic model (several electronic states, :mod:`nearsight.nonadiabatic`) answers with the
adiabatic ground state unless ``state=`` (or ``calc.set(state=k)``) selects another (0 is the
ground state): ``energy`` and ``forces`` are that state's.  ``results`` also holds every state:
``state_energies`` ``[S]`` (eV, ascending), ``state_forces`` ``[n, S, 3]``, ``diabatic_matrix``
``[S, S]``, ``state_couplings`` h_ij ``[n, P, 3]`` (eV/Å) and ``derivative_couplings``
d_ij = h_ij/(E_j − E_i) ``[n, P, 3]`` (1/Å) for the pairs i < j ((0,1), (0,2), ..., (1,2), ...);
per-atom ``energies`` are not defined for it (ASE's ``energies`` means per-atom energies).

Every structure is checked (:mod:`nearsight.guards`): atoms closer than ``min_distance``
(0.1 Å) raise :class:`~nearsight.guards.CloseAtomsError` naming both atoms and their
distance, and a NaN or infinite energy, force or stress raises
:class:`~nearsight.guards.NonFiniteOutputError` naming the closest pair.  A model that
returns ``keys.EXTRAPOLATION`` adds ``results["extrapolation"]`` (per-atom count of
descriptor components outside the training range) and ``results["extrapolating_atoms"]``;
``on_extrapolation`` is ``"warn"`` (default: one warning each time atoms start to
extrapolate), ``"ignore"`` or ``"raise"`` (:class:`~nearsight.guards.ExtrapolationError`).
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from torch import nn

from . import keys
from .data.neighbours import atoms_to_graph
from .guards import MIN_DISTANCE, ExtrapolationMonitor, check_distances, check_finite
from .models.forcefield import ForceField

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class NearsightCalculator(Calculator):
    """ASE calculator wrapping a nearsight model (object or model file path)."""

    implemented_properties = [
        "energy", "free_energy", "energies", "forces", "stress", "charges", "dipole",
        "state_energies", "state_forces", "diabatic_matrix", "state_couplings", "derivative_couplings",
    ]  # fmt: skip
    default_parameters = {"external_field": None, "state": None}
    _INFO_INPUTS = ("charge", "multiplicity", "external_field")  # atoms.info entries that are model inputs

    def __init__(
        self,
        model: nn.Module | str | os.PathLike,
        dtype: str = "float64",
        device: str = "cpu",
        baseline: Calculator | None = None,
        head: str | None = None,
        min_distance: float = MIN_DISTANCE,
        on_extrapolation: str = "warn",
        external_field=None,
        state: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(external_field=external_field, state=state, **kwargs)
        _field_tensor(external_field, torch.float64)  # checked here, used in calculate
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.min_distance = float(min_distance)
        self.extrapolation = ExtrapolationMonitor(on_extrapolation)
        if isinstance(model, (str, os.PathLike)):
            from .models.io import load_model

            model = load_model(model)
        else:
            model = copy.deepcopy(model)  # never change the caller's module (dtype, mode, grads)
        self.dtype = _DTYPES[dtype]
        self.device = torch.device(device)
        self.forcefield = ForceField(model).to(device=self.device, dtype=self.dtype).eval()
        for p in self.forcefield.parameters():
            p.requires_grad_(False)
        delta = getattr(model, "metadata", {}).get("delta")
        if delta is None and baseline is not None:
            raise ValueError(
                "baseline= given, but the model was not trained as a Δ-model (no baseline recorded)"
            )
        if delta is not None and baseline is None:
            if not delta.get("baseline"):
                raise ValueError(
                    "this is a Δ-model (trained on labels minus "
                    f"{delta.get('baseline_energy_key')!r}) whose file records no baseline calculator: "
                    "pass baseline=<the ASE calculator of that method>"
                )
            from .baselines import make_baseline

            baseline = make_baseline(delta["baseline"])
        self.baseline = baseline
        heads = list(getattr(model, "heads", []) or [])
        if head is not None and head not in heads:
            raise ValueError(f"head {head!r} not in the model's heads {heads}")
        self.head = None if not heads else heads.index(head) if head is not None else len(heads) - 1
        self.n_states = int(getattr(model, "n_states", 1))
        self._active_state()  # checked here

    @property
    def cutoff(self) -> float:
        return self.forcefield.cutoff

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        want_stress = "stress" in properties
        periodic = bool(np.all(atoms.pbc))
        if want_stress and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        graph = atoms_to_graph(atoms, self.cutoff, self.dtype)
        if self.head is not None:
            graph[keys.HEAD] = torch.tensor([self.head])
        if self.parameters.external_field is not None:
            graph[keys.EXTERNAL_FIELD] = _field_tensor(self.parameters.external_field, self.dtype)
        field_on = keys.EXTERNAL_FIELD in graph and bool(graph[keys.EXTERNAL_FIELD].abs().max() > 0)
        check_distances(atoms, graph, self.min_distance)
        graph = {k: v.to(self.device) for k, v in graph.items()}
        state = self._active_state()
        out = self.forcefield(graph, forces=True, stress=periodic and state == 0)
        if self.n_states > 1:
            results = _state_results(out, state)
        else:
            energy = float(out[keys.ENERGY].detach().sum())
            results = {
                "energy": energy,
                "free_energy": energy,
                "energies": out[keys.ATOMIC_ENERGIES].detach().cpu().double().numpy(),
                "forces": out[keys.FORCES].detach().cpu().double().numpy(),
            }
        if want_stress and state != 0:
            raise PropertyNotImplementedError(
                f"stress is computed for the ground state only (state = {state})"
            )
        if periodic and keys.STRESS in out:
            stress = out[keys.STRESS][0].detach().cpu().double().numpy()
            results["stress"] = full_3x3_to_voigt_6_stress(stress)
        results.update(_named_outputs(out))
        if field_on and "charges" not in results:
            raise ValueError(
                "an external electric field is given but this model predicts no charges to feel it "
                "(a long-range model with model.longrange.coulomb does)"
            )
        for prop in ("charges", "dipole"):
            if prop in properties and prop not in results:
                raise PropertyNotImplementedError(
                    f"this model predicts no {prop} (a model with a charge head does)"
                )
        check_finite(atoms, graph, results)
        counts = out.get(keys.EXTRAPOLATION)
        counts = None if counts is None else counts.detach().cpu().double().numpy()
        results.update(self.extrapolation.report(atoms, counts))
        self.results = results
        if self.baseline is not None:
            self._add_baseline(atoms, want_stress)

    def set(self, **kwargs) -> dict:
        """Change parameters (``external_field``, ``state``); a change discards the results."""
        changed = super().set(**kwargs)
        if changed and hasattr(self, "n_states"):  # (not while ASE's __init__ sets the defaults)
            self._active_state()
            self.reset()
        return changed

    def _active_state(self) -> int:
        """The electronic state whose energy and forces the calculator gives (0: ground state)."""
        state = self.parameters.get("state")
        if state is None:
            return 0
        if (
            isinstance(state, bool)
            or not isinstance(state, (int, np.integer))
            or not 0 <= state < self.n_states
        ):
            raise ValueError(
                f"state = {state!r}: must be an integer in [0, {self.n_states - 1}] (the model has "
                f"{self.n_states} state{'s' if self.n_states > 1 else ''}; 0 is the ground state)"
            )
        return int(state)

    def check_state(self, atoms, tol: float = 1e-15) -> list[str]:
        """ASE's changes plus ``info`` entries the model reads (total charge, external field)."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and "info" not in changes:
            for key in self._INFO_INPUTS:
                old, new = self.atoms.info.get(key), atoms.info.get(key)
                if (old is None) != (new is None) or (
                    old is not None and not np.array_equal(np.asarray(old), np.asarray(new))
                ):
                    changes.append("info")
                    break
        return changes

    def _add_baseline(self, atoms, want_stress: bool) -> None:
        """Full = baseline + correction, for every property computed."""
        probe = atoms.copy()
        probe.calc = self.baseline
        e_base = float(probe.get_potential_energy())
        res = self.results
        res["delta_energy"] = res["energy"]
        res["baseline_energy"] = e_base
        res["energy"] = res["free_energy"] = e_base + res["delta_energy"]
        res["forces"] = res["forces"] + probe.get_forces()
        try:
            res["energies"] = res["energies"] + probe.get_potential_energies()
        except (PropertyNotImplementedError, NotImplementedError):
            del res["energies"]
        if "stress" in res:
            try:
                res["stress"] = res["stress"] + probe.get_stress()
            except (PropertyNotImplementedError, NotImplementedError):
                if want_stress:
                    raise PropertyNotImplementedError("the baseline calculator provides no stress") from None
                del res["stress"]


def _named_outputs(out: dict[str, torch.Tensor]) -> dict[str, object]:
    """ASE results from a model's other outputs: ``charges`` [n] (e) and ``dipole`` [3] (e·Å) where
    the model has a charge head, and each energy term of a long-range model (eV, by its name)."""
    results: dict[str, object] = {}
    if keys.CHARGES in out:
        results["charges"] = out[keys.CHARGES].detach().cpu().double().numpy()
    if keys.DIPOLE in out:
        results["dipole"] = out[keys.DIPOLE][0].detach().cpu().double().numpy()
    from .longrange.model import ENERGY_TERMS

    for name in ENERGY_TERMS:
        if name in out:
            results[name] = float(out[name].detach().sum())
    return results


def _state_results(out: dict[str, torch.Tensor], state: int) -> dict[str, object]:
    """ASE results of a diabatic model: the active state's energy and forces, and every state's."""
    from .nonadiabatic.matrix import pair_indices

    def array(name: str) -> np.ndarray:
        return out[name].detach().cpu().double().numpy()

    energies, forces, h = array(keys.STATE_ENERGIES)[0], array(keys.STATE_FORCES), array(keys.STATE_COUPLINGS)
    a, b = pair_indices(len(energies)).numpy()
    gaps = energies[b] - energies[a]  # E_j − E_i of each pair
    return {
        "energy": float(energies[state]),
        "free_energy": float(energies[state]),
        "forces": forces[:, state],
        "state_energies": energies,
        "state_forces": forces,
        "diabatic_matrix": array(keys.DIABATIC_MATRIX)[0],
        "state_couplings": h,
        "derivative_couplings": h / np.where(gaps > 0, gaps, np.inf)[None, :, None],
    }


def _field_tensor(value, dtype: torch.dtype) -> torch.Tensor:
    """``[1, 3]`` tensor (V/Å) of an external field given as three finite numbers."""
    if value is None:
        return torch.zeros((1, 3), dtype=dtype)
    try:
        field = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        field = np.empty(0)
    if field.shape != (3,) or not np.isfinite(field).all():
        raise ValueError(f"external_field = {value!r} must be three finite numbers (V/Å)")
    return torch.as_tensor(field, dtype=dtype).reshape(1, 3)
