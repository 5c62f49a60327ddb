"""Bias potentials V(s) on collective variables, and the ASE calculator that adds them to any other.

:class:`BiasedCalculator` wraps an ASE calculator: E = E_0 + V(s(R)),
F = F_0 - Σ_d (∂V/∂s_d) ∂s_d/∂R.
``results`` also hold ``bias_energy`` (V, eV; per walker: ``walker_bias_energies``), ``cv`` (the
CV values, [n_walkers, n_cvs]) and ``unbiased_energy`` (E_0);
other results of the wrapped calculator (charges, extrapolation counts, ...) pass through, except
per-atom energies and stresses (the bias is not a sum over atoms).
Stress: σ = σ_0 + (1/Ω) Σ_d (∂V/∂s_d) ∂s_d/∂ε, available when every CV is built from relative
vectors (distance, angle, dihedral, coordination number: their strain derivative is exact).  A bias
on a :class:`~nearsight.sampling.colvars.Position` depends on where the cell puts the atom, not on
relative vectors, so asking for the stress then raises ``PropertyNotImplementedError`` (use such a
bias in NVT only).

Biases: :class:`HarmonicBias` (an umbrella window, Kästner, WIREs Comput. Mol. Sci. 1, 932 (2011))
and :class:`WellTemperedMetadynamics` (Barducci, Bussi & Parrinello, PRL 100, 020603 (2008)).
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .._files import atomic_write
from .colvars import CollectiveVariable, CVColumn, evaluate_column, wrap_periodic
from .hills_grid import HillGrid

_OWN = ("energy", "free_energy", "forces", "stress", "energies", "stresses")


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


_ARRAYS = tuple(p for p in all_changes if p not in ("cell", "pbc"))  # positions, numbers, ...


def exact_changes(old: Atoms | None, new: Atoms) -> list[str]:
    """ASE's ``compare_atoms`` with exact equality: what changed between ``old`` and ``new``.

    It checks the same things (cell, pbc, the per-atom arrays ASE tracks) at a fraction of the
    cost, which matters for cheap potentials where the check dominated each MD step.
    """
    if old is None:
        return list(all_changes)
    changes = [] if _same(old.cell.array, new.cell.array) else ["cell"]
    if not _same(old.pbc, new.pbc):
        changes.append("pbc")
    for key in _ARRAYS:
        a, b = old.arrays.get(key), new.arrays.get(key)
        if (a is None) != (b is None) or (a is not None and not _same(a, b)):
            changes.append(key)
    return changes


def remember(calc: Calculator, atoms: Atoms | None) -> None:
    """What ``Calculator.calculate`` does (``calc.atoms = atoms.copy()``), in place when it can.

    :func:`exact_changes` compares only cell, pbc and the per-atom arrays, so copying those into a
    kept copy (same array names, shapes and dtypes) is enough and avoids building a new ``Atoms``
    every step (``Calculator.reset`` drops ``calc.atoms``, the kept copy ``calc._kept`` stays).
    """
    if atoms is None:
        return
    kept = getattr(calc, "_kept", None)
    if (
        kept is None
        or kept.arrays.keys() != atoms.arrays.keys()
        or any(
            kept.arrays[k].shape != v.shape or kept.arrays[k].dtype != v.dtype
            for k, v in atoms.arrays.items()
        )
    ):
        calc._kept = atoms.copy()
    else:
        for key, value in atoms.arrays.items():
            np.copyto(kept.arrays[key], value)
        kept.cell.array[:] = atoms.cell.array
        kept.pbc[:] = atoms.pbc
    calc.atoms = calc._kept


def _walkers(
    cvs: CollectiveVariable | Sequence[CollectiveVariable],
    walkers: Sequence[Sequence[CollectiveVariable]] | None,
    who: str,
) -> tuple[tuple[CollectiveVariable, ...], ...]:
    """The CVs of every walker, [n_walkers][n_cvs], the first being ``cvs``; kinds and periods must match."""
    first = (cvs,) if isinstance(cvs, CollectiveVariable) else tuple(cvs)
    out = [first] + [(w,) if isinstance(w, CollectiveVariable) else tuple(w) for w in walkers or ()]
    if not first:
        raise ValueError(f"{who}: no collective variable given")
    for w, group in enumerate(out):
        if [(cv.kind, cv.period) for cv in group] != [(cv.kind, cv.period) for cv in first]:
            raise ValueError(f"{who}: walker {w} has CVs {list(group)}, unlike walker 0's {list(first)}")
    return tuple(out)


class Bias(ABC):
    """A bias V(s) on ``n_cvs`` CVs, applied to each walker: V_total = Σ_w V(s_w).

    ``walkers[w]`` are the CVs of walker w.  One walker is the usual case; several walkers are
    equivalent CVs of independent copies of a system in one structure (copies farther apart than
    the cutoff of a local model do not interact; the toy surfaces move each atom independently),
    each feeling the same bias: every MD step then gives one sample per walker.
    """

    walkers: tuple[tuple[CollectiveVariable, ...], ...]

    @property
    def cvs(self) -> tuple[CollectiveVariable, ...]:
        """The CVs of the first walker."""
        return self.walkers[0]

    @abstractmethod
    def energies_and_derivatives(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """V and ∂V/∂s at points s [n_points, n_cvs]: [n_points] eV, [n_points, n_cvs] eV per CV unit."""

    def energy_and_derivative(self, s: np.ndarray) -> tuple[float, np.ndarray]:
        """V(s) in eV and ∂V/∂s ([n_cvs]) at one point s ([n_cvs])."""
        v, dv = self.energies_and_derivatives(np.asarray(s, dtype=float).reshape(1, -1))
        return float(v[0]), dv[0]

    def potential(self, points: np.ndarray) -> np.ndarray:
        """V at many points ([n_points, n_cvs] -> [n_points], eV)."""
        return self.energies_and_derivatives(np.asarray(points, dtype=float).reshape(-1, len(self.cvs)))[0]


class HarmonicBias(Bias):
    """V(s) = k/2 (s - s_0)², the difference wrapped for a periodic CV (a dihedral).

    ``k`` is in eV per unit of the CV squared: eV/Å² for lengths, eV/rad² for angles.  ``walkers``:
    the same CV of further independent copies (see :class:`Bias`), each held by the same spring.
    """

    def __init__(
        self,
        cv: CollectiveVariable,
        centre: float,
        k: float,
        *,
        walkers: Sequence[CollectiveVariable] | None = None,
    ) -> None:
        if not k > 0:
            raise ValueError(f"HarmonicBias: k = {k!r} must be positive (eV per CV unit²)")
        self.walkers = _walkers(cv, walkers, "HarmonicBias")
        if len(self.cvs) != 1:
            raise ValueError(f"HarmonicBias: one CV per walker, got {list(self.cvs)}")
        self.period = self.cvs[0].period
        self.centre = float(wrap_periodic(centre, self.period))
        self.k = float(k)

    def energies_and_derivatives(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        delta = wrap_periodic(np.asarray(s, dtype=float) - self.centre, self.period)  # [n, 1]
        return 0.5 * self.k * delta[:, 0] ** 2, self.k * delta


class WellTemperedMetadynamics(Bias):
    """V(s, t) = Σ_i w_i exp(-Σ_d (s_d - s_d^(i))² / (2σ_d²)), a Gaussian hill every ``pace`` steps.

    Well-tempered heights w_i = w_0 exp(-V(s^(i), t_i) / (k_B ΔT)) with ΔT = (γ - 1) T, γ the bias
    factor; then F(s) = -γ/(γ - 1) V(s, t→∞) + C (Barducci, Bussi & Parrinello, PRL 100, 020603
    (2008)).  Hills are deposited by the MD driver through :meth:`deposit`
    (:func:`~nearsight.sampling.metadynamics.run_metadynamics`); the state saves and loads
    atomically (:meth:`save`, :meth:`load`).  Periodic CVs use wrapped differences.  ``height`` w_0
    in eV, ``sigma`` in units of each CV.  Several ``walkers`` share one bias, each depositing its
    own hills (multiple-walker metadynamics: Raiteri et al., J. Phys. Chem. B 110, 3533 (2006)).
    ``grid``: ``(lower, upper, bins)`` per CV to tabulate the hills (:mod:`.hills_grid`, for long or
    multiple-walker runs); without it every evaluation sums all hills exactly.
    """

    def __init__(
        self,
        cvs: CollectiveVariable | Sequence[CollectiveVariable],
        height: float,
        sigma: float | Sequence[float],
        bias_factor: float,
        temperature_K: float,
        pace: int,
        *,
        walkers: Sequence[Sequence[CollectiveVariable]] | None = None,
        grid: Sequence[tuple[float, float, int]] | None = None,
    ) -> None:
        self.walkers = _walkers(cvs, walkers, "WellTemperedMetadynamics")
        sig = np.atleast_1d(np.asarray(sigma, dtype=float))
        if sig.size == 1:
            sig = np.repeat(sig, len(self.cvs))
        if sig.shape != (len(self.cvs),) or not np.all(sig > 0):
            raise ValueError(f"WellTemperedMetadynamics: sigma {sigma!r} needs one positive width per CV")
        if not (height > 0 and bias_factor > 1 and temperature_K > 0):
            raise ValueError(
                "WellTemperedMetadynamics: need height > 0, bias_factor > 1, temperature_K > 0; got "
                f"{height!r}, {bias_factor!r}, {temperature_K!r}"
            )
        if isinstance(pace, bool) or not isinstance(pace, (int, np.integer)) or pace < 1:
            raise ValueError(f"WellTemperedMetadynamics: pace = {pace!r} must be an integer >= 1 (MD steps)")
        self.height, self.sigma, self.bias_factor = float(height), sig, float(bias_factor)
        self.temperature_K, self.pace = float(temperature_K), int(pace)
        self._periods = [cv.period for cv in self.cvs]
        self.grid_spec = None if grid is None else [tuple(g) for g in grid]
        self._grid = None if grid is None else HillGrid(grid, self.sigma, self._periods)
        self._centres = np.zeros((0, len(self.cvs)))  # [capacity, n_cvs]
        self._heights = np.zeros(0)  # [capacity] eV
        self._n = 0

    @property
    def kT(self) -> float:
        return units.kB * self.temperature_K

    @property
    def n_hills(self) -> int:
        return self._n

    @property
    def centres(self) -> np.ndarray:
        """[n_hills, n_cvs] where the hills were deposited."""
        return self._centres[: self._n]

    @property
    def heights(self) -> np.ndarray:
        """[n_hills] the heights they were given (eV)."""
        return self._heights[: self._n]

    def energies_and_derivatives(
        self, s: np.ndarray, n_hills: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """V and ∂V/∂s at s [n_points, n_cvs] with the first ``n_hills`` hills, summed exactly; with
        ``n_hills=None`` all of them, from the grid if there is one."""
        s = np.asarray(s, dtype=float)
        if self._grid is not None and n_hills is None:
            return self._grid.evaluate(s)
        n = self._n if n_hills is None else int(n_hills)
        v, dv = np.empty(len(s)), np.empty(s.shape)
        chunk = max(1, 1_000_000 // max(n, 1))
        for start in range(0, len(s), chunk):
            delta = s[start : start + chunk, None, :] - self._centres[None, :n, :]  # [p, n, d]
            for d, period in enumerate(self._periods):
                if period is not None:
                    delta[..., d] = wrap_periodic(delta[..., d], period)
            scaled = delta / self.sigma**2
            w = np.exp(-0.5 * np.sum(delta * scaled, axis=-1)) * self._heights[:n]  # [p, n]
            v[start : start + chunk] = w.sum(axis=1)
            dv[start : start + chunk] = -np.einsum("pn,pnd->pd", w, scaled)
        return v, dv

    def potential(self, points: np.ndarray, n_hills: int | None = None) -> np.ndarray:
        """V(points) in eV with the first ``n_hills`` hills, [n_points, n_cvs] -> [n_points]."""
        return self.energies_and_derivatives(
            np.asarray(points, dtype=float).reshape(-1, len(self.cvs)), n_hills
        )[0]

    def deposit(self, s: np.ndarray) -> np.ndarray:
        """Hills at the points s ([n_walkers, n_cvs] or [n_cvs]), each with the well-tempered height
        w_0 exp(-V(s)/(k_B (γ-1) T)) from the bias before this deposition (walkers depositing at the
        same time do not see each other's new hills); returns the heights (eV)."""
        s = np.asarray(s, dtype=float).reshape(-1, len(self.cvs))
        heights = self.height * np.exp(
            -self.energies_and_derivatives(s)[0] / (self.kT * (self.bias_factor - 1.0))
        )
        if self._n + len(s) > len(self._heights):  # grow by doubling: deposition stays O(1) amortised
            extra = max(64, self._n, len(s))
            self._centres = np.concatenate([self._centres, np.zeros((extra, len(self.cvs)))])
            self._heights = np.concatenate([self._heights, np.zeros(extra)])
        self._centres[self._n : self._n + len(s)], self._heights[self._n : self._n + len(s)] = s, heights
        self._n += len(s)
        if self._grid is not None:
            self._grid.add(s, heights)
        return heights

    def free_energy(self, points: np.ndarray, n_hills: int | None = None) -> np.ndarray:
        """F(s) = -γ/(γ-1) V(s) in eV, up to a constant (the well-tempered limit)."""
        return -self.bias_factor / (self.bias_factor - 1.0) * self.potential(points, n_hills)

    def parameters(self) -> dict[str, Any]:
        return {
            "walkers": [[cv.to_dict() for cv in w] for w in self.walkers],
            "height": self.height,
            "sigma": self.sigma.tolist(),
            "bias_factor": self.bias_factor,
            "temperature_K": self.temperature_K,
            "pace": self.pace,
            "grid": None if self.grid_spec is None else [list(g) for g in self.grid_spec],
        }

    def save(self, path: str | Path) -> Path:
        """Write the parameters and hills to ``path`` (npz), atomically."""
        buffer = io.BytesIO()
        np.savez(buffer, centres=self.centres, heights=self.heights, parameters=json.dumps(self.parameters()))
        return atomic_write(path, lambda fh: fh.write(buffer.getvalue()), mode="wb")

    def load(self, path: str | Path) -> None:
        """Replace the hills by those saved in ``path``; its parameters must equal this bias's."""
        try:
            with np.load(path) as data:
                saved = json.loads(str(data["parameters"]))
                centres, heights = np.array(data["centres"]), np.array(data["heights"])
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable metadynamics hills file ({exc})") from exc
        ours = json.loads(json.dumps(self.parameters()))
        for key in ours:
            if saved.get(key) != ours[key]:
                raise ValueError(
                    f"{path}: hills saved with {key} = {saved.get(key)!r}, this bias has {ours[key]!r}"
                )
        self.load_hills(centres, heights)

    def load_hills(self, centres: np.ndarray, heights: np.ndarray) -> None:
        """Replace the hills: centres [n_hills, n_cvs], heights [n_hills] (eV)."""
        centres = np.array(centres, dtype=float).reshape(-1, len(self.cvs))
        heights = np.array(heights, dtype=float).reshape(-1)
        if len(centres) != len(heights):
            raise ValueError(f"{len(centres)} hill centres but {len(heights)} heights")
        self._centres, self._heights, self._n = centres, heights, len(heights)
        if self._grid is not None:
            self._grid = HillGrid(self.grid_spec, self.sigma, self._periods)
            self._grid.add(centres, heights)


class BiasedCalculator(Calculator):
    """``calc`` plus a bias: energy, forces (and stress, see the module docstring) of E_0 + V(s(R)).

    After the bias changes (a metadynamics hill), call :meth:`bias_changed`: the next request
    recomputes the bias only, the wrapped calculator answers from its cache.
    """

    implemented_properties = [
        "energy", "free_energy", "forces", "stress", "bias_energy", "unbiased_energy", "cv",
    ]  # fmt: skip

    def __init__(self, calc: Calculator, bias: Bias, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calc = calc
        self.bias = bias

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        return exact_changes(self.atoms, atoms)

    def bias_changed(self) -> None:
        """Forget the cached totals (the structure is unchanged; the bias is not)."""
        self.results = {}

    def calculate(
        self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",), system_changes=all_changes
    ) -> None:
        remember(self, atoms)
        atoms = atoms if atoms is not None else self.atoms
        want_stress = "stress" in properties
        forces = np.array(self.calc.get_forces(atoms))  # first: most calculators give E with F
        energy = float(self.calc.get_potential_energy(atoms))
        columns = [evaluate_column(list(c), atoms) for c in zip(*self.bias.walkers)]  # one per CV
        s = np.stack([c.values for c in columns], axis=1)  # [n_walkers, n_cvs]
        v, dv = self.bias.energies_and_derivatives(s)
        for d, c in enumerate(columns):
            np.subtract.at(forces, c.atoms, dv[c.owner, d, None] * c.local_gradient)
        results = {k: r for k, r in self.calc.results.items() if k not in _OWN}
        free = self.calc.results.get("free_energy", energy)
        bias_energy = float(v.sum())
        results.update(
            energy=energy + bias_energy,
            free_energy=free + bias_energy,
            forces=forces,
            bias_energy=bias_energy,
            walker_bias_energies=v,
            unbiased_energy=energy,
            cv=s,
        )
        if want_stress:
            results["stress"] = self._stress(atoms, columns, dv)
        self.results = results

    def _stress(self, atoms: Atoms, columns: list[CVColumn], dv: np.ndarray) -> np.ndarray:
        w = np.zeros((3, 3))
        for d, c in enumerate(columns):
            if c.strain_derivative is None:
                raise PropertyNotImplementedError(
                    f"no stress with a bias on {self.bias.cvs[d]!r}: it is not a function of relative "
                    "vectors (the bias would change with the cell in a way the stress cannot express)"
                )
            w += np.einsum("w,wab->ab", dv[:, d], c.strain_derivative)
        w = 0.5 * (w + w.T)  # exact for rotation-invariant CVs, rounding otherwise
        return np.asarray(self.calc.get_stress(atoms)) + full_3x3_to_voigt_6_stress(w / atoms.get_volume())
