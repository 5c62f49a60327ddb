"""The loss as a sum of declared terms: the seed's normalised squared errors.

    L = (1/N) Σ_k w_k Σ_t λ_t m_k,t e_t,k / σ_t²

over the N structures k of a batch, with per-frame weights w_k, and per term t its weight
λ_t, its mask m_k,t (1 where structure k carries the label) and its error e_t,k, the mean
squared error over the components the term compares.  The built-in terms give the seed's
energy + force (+ stress) loss:

    energy   (E_k − E_k^ref)² / σ_E²       (or energy_per_atom: ((E_k − E_k^ref)/n_k)² / σ_e²)
    forces   (1/(3 n_k)) Σ_i ‖F_k,i − F_k,i^ref‖² / σ_F²
    stress   λ_S (1/9) ‖σ_k − σ_k^ref‖² / σ_S²

A term is one small class: the output it compares (a field of :mod:`nearsight.keys`, whose
label sits under ``ref_<output>`` with the mask ``has_<output>``), a name for the config and
the logs, and how to compute its σ default from the data.  ``@register_loss_term`` makes it
available to ``training.loss`` in a config; nothing in the trainer changes.  Under
data-parallel training each process sums over its share of a batch and divides by the size
of the whole batch (``n_total``), so the gradients added over the processes equal those of
one process on the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import ClassVar

import numpy as np
import torch

from .. import keys
from ..data.frame import Frame
from ..nn import scatter_sum

TERMS: dict[str, type[LossTerm]] = {}
"""Every registered loss term by its config name."""


def register_loss_term(cls: type[LossTerm]) -> type[LossTerm]:
    """Class decorator: make a :class:`LossTerm` available to ``training.loss`` under ``cls.name``."""
    if not getattr(cls, "name", None) or not getattr(cls, "output", None):
        raise TypeError(f"{cls.__name__}: a loss term needs class attributes name and output")
    keys.field(cls.output)  # the output must be a declared field
    if cls.name in TERMS and TERMS[cls.name] is not cls:
        raise ValueError(f"loss term {cls.name!r} is already registered by {TERMS[cls.name].__name__}")
    TERMS[cls.name] = cls
    return cls


class LossTerm:
    """One term: λ · (mean squared error of ``output`` against its label) / σ², per structure.

    Per-atom outputs average over the structure's atoms and components, per-structure outputs
    over their components.  Subclasses set ``name`` and ``output``, and may override
    :meth:`default_sigma` (by default the RMS of the label values) and :meth:`squared_error`.
    """

    name: ClassVar[str]
    output: ClassVar[str]
    needs_stress: ClassVar[bool] = False  # the force field must compute the stress

    def __init__(self, sigma: float, weight: float = 1.0) -> None:
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"loss term {self.name!r}: sigma = {sigma!r} must be a positive number")
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"loss term {self.name!r}: weight = {weight!r} must be a number >= 0")
        self.sigma = float(sigma)
        self.weight = float(weight)

    @property
    def label_key(self) -> str:
        return keys.label_key(self.output)

    @property
    def mask_key(self) -> str:
        return keys.mask_key(self.output)

    @property
    def active(self) -> bool:
        return self.weight > 0

    def squared_error(self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean squared error per structure ``[n_graphs]`` (unmasked)."""
        diff = self.prediction(pred) - batch[self.label_key]
        n_graphs = batch[keys.N_ATOMS].shape[0]
        if keys.field(self.output).per == "atom":
            sq = (diff**2).reshape(diff.shape[0], -1)
            per_graph = scatter_sum(sq.sum(-1), batch[keys.BATCH], n_graphs)  # [n_graphs]
            n_atoms = batch[keys.N_ATOMS].to(diff.dtype)
            return per_graph / (float(sq.shape[1]) * n_atoms)
        sq = (diff**2).reshape(n_graphs, -1)
        return sq.sum(-1) / float(sq.shape[1])

    def __call__(self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """λ e / σ² per structure ``[n_graphs]`` (unmasked)."""
        return self.weight * self.squared_error(pred, batch) / self.sigma**2

    def prediction(self, pred: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.output not in pred:
            raise KeyError(
                f"loss term {self.name!r} needs the output {self.output!r}, which the model did not "
                f"return (outputs: {sorted(pred)})"
            )
        return pred[self.output]

    @classmethod
    def label_values(cls, frame: Frame) -> np.ndarray | None:
        """The frame's label of this term (None where absent)."""
        value = frame.labels.get(cls.output)
        return None if value is None else np.asarray(value)

    @classmethod
    def label_rms(cls, frames: Sequence[Frame]) -> float:
        """RMS of the label values over the frames that carry one (0 where none does)."""
        values = [v.ravel() for f in frames if (v := cls.label_values(f)) is not None]
        return float(np.sqrt(np.mean(np.concatenate(values) ** 2))) if values else 0.0

    @classmethod
    def default_sigma(cls, frames: Sequence[Frame], stats: dict) -> float:
        """σ when the config gives none: the RMS of the label values (1 where it is zero)."""
        rms = cls.label_rms(frames)
        return rms if rms > 0 else 1.0


@register_loss_term
class EnergyTerm(LossTerm):
    """(E − E^ref)² / σ_E²; σ_E defaults to the spread of the energies about the per-element
    reference energies (``stats["energy_std"]``)."""

    name = "energy"
    output = keys.ENERGY

    def __call__(self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.weight * ((self.prediction(pred) - batch[self.label_key]) / self.sigma) ** 2

    @classmethod
    def label_values(cls, frame: Frame) -> np.ndarray | None:
        return None if frame.energy is None else np.asarray([frame.energy])

    @classmethod
    def default_sigma(cls, frames: Sequence[Frame], stats: dict) -> float:
        return float(max(stats["energy_std"], 1e-6))


@register_loss_term
class EnergyPerAtomTerm(EnergyTerm):
    """((E − E^ref)/n)² / σ_e²: the energy error per atom, so that cells of 2 and of 100+ atoms
    weigh alike (``training.loss: {energy_per_atom: {}, forces: {}, stress: {weight: ...}}`` in
    place of ``energy``).  σ_e defaults to the spread of the per-atom energies about the
    per-element reference energies (eV/atom)."""

    name = "energy_per_atom"

    def __call__(self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        n_atoms = batch[keys.N_ATOMS].to(batch[self.label_key].dtype)
        error = (self.prediction(pred) - batch[self.label_key]) / n_atoms
        return self.weight * (error / self.sigma) ** 2

    @classmethod
    def default_sigma(cls, frames: Sequence[Frame], stats: dict) -> float:
        ref = stats.get("reference_energies") or {}
        residuals = [
            (f.energy - sum(ref.get(int(z), 0.0) for z in f.numbers)) / f.n_atoms
            for f in frames
            if f.energy is not None
        ]
        return float(max(np.std(residuals), 1e-6)) if len(residuals) > 1 else 1.0


@register_loss_term
class ForcesTerm(LossTerm):
    """(1/3n) Σ_i ‖F_i − F_i^ref‖² / σ_F²; σ_F defaults to the RMS force component."""

    name = "forces"
    output = keys.FORCES

    @classmethod
    def label_values(cls, frame: Frame) -> np.ndarray | None:
        return frame.forces

    @classmethod
    def default_sigma(cls, frames: Sequence[Frame], stats: dict) -> float:
        return float(max(stats["force_rms"] or 1.0, 1e-6))


@register_loss_term
class StressTerm(LossTerm):
    """λ_S (1/9) ‖σ − σ^ref‖² / σ_S²; σ_S defaults to the RMS stress component (0.01 eV/Å³
    without stress labels)."""

    name = "stress"
    output = keys.STRESS
    needs_stress = True

    @classmethod
    def label_values(cls, frame: Frame) -> np.ndarray | None:
        return frame.stress

    @classmethod
    def default_sigma(cls, frames: Sequence[Frame], stats: dict) -> float:
        rms = cls.label_rms(frames)
        return rms if rms > 0 else 0.01


@register_loss_term
class ChargesTerm(LossTerm):
    """(1/n) Σ_i (q_i − q_i^ref)² / σ_q² on atomic charges (e.g. MBIS or Hirshfeld labels read with
    ``data.extra_labels: {charges: KEY}``); σ_q defaults to the RMS label charge."""

    name = "charges"
    output = keys.CHARGES


@register_loss_term
class DipoleTerm(LossTerm):
    """(1/3) ‖μ − μ^ref‖² / σ_μ² on the dipole moment (e·Å, ``data.extra_labels: {dipole: KEY}``);
    σ_μ defaults to the RMS label component."""

    name = "dipole"
    output = keys.DIPOLE


class Loss:
    """The sum of loss terms (:class:`LossTerm`) over a batch; terms of weight 0 are skipped.

    ``loss.sigma_<term>`` and ``loss.<term>_weight`` read and set a term's σ and λ (the
    config's ``training.stages`` use them).
    """

    def __init__(self, terms: Iterable[LossTerm]) -> None:
        object.__setattr__(self, "terms", {})
        for term in terms:
            if term.name in self.terms:
                raise ValueError(f"loss term {term.name!r} given twice")
            self.terms[term.name] = term
        if not self.terms:
            raise ValueError("a loss needs at least one term")

    @property
    def needs_stress(self) -> bool:
        return any(t.active and t.needs_stress for t in self.terms.values())

    def _active(self) -> list[LossTerm]:
        return [t for t in self.terms.values() if t.active]

    def contributions(
        self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Each active term's masked value per structure ``[n_graphs]``, without frame weights."""
        dtype = batch[keys.WEIGHT].dtype
        return {t.name: t(pred, batch) * batch[t.mask_key].to(dtype) for t in self._active()}

    def __call__(
        self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], n_total: int | None = None
    ) -> torch.Tensor:
        weight = batch[keys.WEIGHT]  # [n_graphs]
        total = None
        for value in self.contributions(pred, batch).values():
            total = value if total is None else total + value
        if total is None:
            raise ValueError(f"every loss term has weight 0: {self.state_dict()['terms']}")
        return (weight * total).sum() / (n_total or weight.shape[0])

    def term_sums(self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Σ_k w_k (term value) over the batch for every term (0 for inactive ones): for logging."""
        weight = batch[keys.WEIGHT]
        parts = self.contributions(pred, batch)
        return {name: float((weight * parts[name]).sum()) if name in parts else 0.0 for name in self.terms}

    # ------------------------------------------------ σ and λ by name (stages)
    def _term_attribute(self, attr: str) -> tuple[LossTerm, str]:
        if attr.startswith("sigma_") and attr[6:] in self.terms:
            return self.terms[attr[6:]], "sigma"
        if attr.endswith("_weight") and attr[:-7] in self.terms:
            return self.terms[attr[:-7]], "weight"
        raise AttributeError(f"the loss has no {attr!r}; its terms are {list(self.terms)}")

    def __getattr__(self, attr: str):
        if attr.startswith("__") or attr == "terms":  # (copy and pickle look these up before __init__)
            raise AttributeError(attr)
        term, field = self._term_attribute(attr)
        return getattr(term, field)

    def __setattr__(self, attr: str, value) -> None:
        term, field = self._term_attribute(attr)
        if field == "sigma" and not float(value) > 0:
            raise ValueError(f"{attr} = {value!r} must be positive")
        if field == "weight" and not float(value) >= 0:
            raise ValueError(f"{attr} = {value!r} must be >= 0")
        setattr(term, field, float(value))

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"terms": {name: {"sigma": t.sigma, "weight": t.weight} for name, t in self.terms.items()}}

    @classmethod
    def from_state_dict(cls, state: dict) -> Loss:
        """The loss of a checkpoint (also one written before the loss had named terms)."""
        if "terms" not in state:  # {"sigma_energy", "sigma_forces", "sigma_stress", "stress_weight"}
            return EnergyForceLoss(**state)
        unknown = sorted(set(state["terms"]) - set(TERMS))
        if unknown:
            raise ValueError(f"loss term(s) {unknown} are not registered; registered: {sorted(TERMS)}")
        return cls(TERMS[name](**spec) for name, spec in state["terms"].items())


def EnergyForceLoss(  # noqa: N802 - the loss's name before it had declared terms
    sigma_energy: float, sigma_forces: float, sigma_stress: float = 1.0, stress_weight: float = 0.0
) -> Loss:
    """The seed's energy + force loss, with a stress term of weight ``stress_weight``."""
    return Loss([EnergyTerm(sigma_energy), ForcesTerm(sigma_forces), StressTerm(sigma_stress, stress_weight)])


# ------------------------------------------------------- the loss of a config
_LEGACY = {
    "energy": ("sigma_energy", None),
    "forces": ("sigma_forces", None),
    "stress": ("sigma_stress", "stress_weight"),
}


def loss_spec(training: dict, frames: Sequence[Frame], n_states: int = 1) -> dict[str, dict]:
    """``{term: {"sigma": σ or None, "weight": λ}}`` of a config's ``training`` section.

    Without ``training.loss``: energy, forces (where any frame has forces) and stress (with
    ``stress_weight``), σ from ``sigma_energy``/``sigma_forces``/``sigma_stress``; for a model of
    ``n_states`` > 1 states, the energies, forces and couplings of the states where frames carry them.
    """
    if training.get("loss") is not None:
        return {name: {"sigma": spec.get("sigma"), "weight": spec.get("weight", 1.0)}
                for name, spec in training["loss"].items()}  # fmt: skip
    if n_states > 1:
        names = ("state_energies", "state_forces", "state_couplings")
        return {n: {"sigma": None, "weight": 1.0} for n in names if any(TERMS[n].label_values(f) is not None
                                                                        for f in frames)}  # fmt: skip
    spec = {}
    for name, (sigma_key, weight_key) in _LEGACY.items():
        if name == "forces" and not any(f.forces is not None for f in frames):
            continue  # energy-only data: the force term would add exactly zero
        spec[name] = {"sigma": training[sigma_key], "weight": training[weight_key] if weight_key else 1.0}
    return spec


def build_loss(training: dict, frames: Sequence[Frame], stats: dict, n_states: int = 1) -> Loss:
    """The loss of a config's ``training`` section on the training ``frames``.

    σ not given in the config comes from each term's :meth:`~LossTerm.default_sigma`
    (``stats``: ``energy_std``, ``force_rms``).  A term with weight > 0 whose label no
    training frame carries is an error naming its label.
    """
    terms = []
    for name, spec in loss_spec(training, frames, n_states).items():
        cls = TERMS[name]
        if spec["weight"] > 0 and not any(cls.label_values(f) is not None for f in frames):
            raise ValueError(
                f"loss term {name!r}: no training frame carries its label {cls.output!r} (with "
                f"data.extra_labels: {{{cls.output}: KEY}} for labels beyond energy, forces and stress)"
            )
        sigma = spec["sigma"] if spec["sigma"] is not None else cls.default_sigma(frames, stats)
        terms.append(cls(sigma if isinstance(sigma, list) else float(sigma), float(spec["weight"])))
    return Loss(terms)


from ..nonadiabatic import loss as _state_terms  # noqa: E402, F401  (registers the multi-state terms)
