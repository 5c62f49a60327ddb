"""How far the force on an atom feels another atom move: the force-response decay of a reference method.

For a centre i and another atom j at distance r_ij the response is the largest force change on i
per unit displacement of j, over all directions of the displacement,

    K_ij = ‖∂F_i/∂R_j‖₂ = ‖∂²E/∂R_i∂R_j‖₂     (spectral norm of the 3×3 Hessian block, eV/Å²).

The blocks come from central finite differences of the forces, ∂F/∂R_{c,a} ≈ (F(R + δe_{c,a}) −
F(R − δe_{c,a}))/(2δ), error O(δ²).  Because the Hessian is symmetric (∂F_i/∂R_j = (∂F_j/∂R_i)ᵀ),
displacing only the *centres* c along x, y and z and reading every atom's force gives every block
(c, j): the cost is 6 · n_centres force calculations, whatever the size of the structure.

Two checks of the numerical noise come for free and are reported: the acoustic sum rule
(Σ_j ∂F_j/∂R_c = 0, translation invariance) and, with two or more centres, the symmetry of the
blocks between two centres.  The larger of them is the ``noise`` (eV/Å²), the floor below which
the decay fit ignores responses.

A cutoff r_c neglects, for a centre i, the force from every atom beyond it; if those atoms move by
at most ``amplitude_A`` (thermal motion: ~0.1 Å at room temperature) the force on i changes by

    sum:  ΔF_i(r_c) ≤ a · Σ_{j: r_ij > r_c} K_ij      (all move at once, worst directions: a bound)
    max:  ΔF_i(r_c) = a · max_{j: r_ij > r_c} K_ij    (one atom moves)

which a model with cutoff r_c cannot see.  :meth:`ForceResponse.cutoff_for` gives the smallest
sampled distance with max_i ΔF_i(r_c) ≤ tolerance.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .decay import DecayFit, fit_decay, fit_or_reason

__all__ = ["ForceResponse", "force_response", "forces_of", "check_centres", "reference_name"]

ForceReference = Calculator | Callable[[Atoms], object]


def reference_name(reference: ForceReference) -> str:
    """A readable name of a calculator, oracle or function, for reports and errors."""
    name = getattr(reference, "name", None)
    if isinstance(name, str) and name and name != "unknown":
        return name
    return getattr(reference, "__name__", None) or type(reference).__name__


def forces_of(atoms: Atoms, reference: ForceReference) -> np.ndarray:
    """Forces ``[n_atoms, 3]`` (eV/Å) of ``atoms`` from an ASE calculator, a ``nearsight.qm`` oracle
    (``oracle(atoms) -> Label``) or a function returning the forces.

    Raises
    ------
    ValueError
        A failed oracle label (its error is quoted) or forces of the wrong shape or not finite.
    """
    probe = atoms.copy()
    if isinstance(reference, Calculator):
        probe.calc = reference
        forces = probe.get_forces()
    else:
        out = reference(probe)
        if hasattr(out, "ok") and hasattr(out, "forces"):  # a nearsight.qm Label
            if not out.ok or out.forces is None:
                raise ValueError(f"force response: the reference failed: {out.error}")
            forces = out.forces
        else:
            forces = out
    forces = np.asarray(forces, dtype=float)
    if forces.shape != (len(atoms), 3):
        raise ValueError(
            f"force response: {reference_name(reference)} returned forces of shape {forces.shape}, "
            f"expected ({len(atoms)}, 3)"
        )
    if not np.all(np.isfinite(forces)):
        raise ValueError(f"force response: {reference_name(reference)} returned non-finite forces")
    return forces


def check_centres(atoms: Atoms, centres: Sequence[int] | None, where: str = "force response") -> np.ndarray:
    """``centres`` as unique sorted indices into ``atoms`` (None: every atom); errors name the value."""
    n = len(atoms)
    if n < 2:
        raise ValueError(
            f"{where}: the structure {atoms.get_chemical_formula() or '(empty)'} has {n} atom(s); "
            "a response between atoms needs at least 2"
        )
    if centres is None:
        return np.arange(n)
    out = []
    for c in centres:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not -n <= int(c) < n:
            raise ValueError(f"{where}: centre {c!r} is not an atom index of a structure with {n} atoms")
        out.append(int(c) % n)
    if not out:
        raise ValueError(f"{where}: centres is empty; give at least one atom index")
    return np.unique(out)


def _pair_distances(atoms: Atoms, centre: int) -> np.ndarray:
    return atoms.get_distances(centre, np.arange(len(atoms)), mic=bool(np.any(atoms.pbc)))


@dataclass
class ForceResponse:
    """Force responses K_ij (eV/Å²) of centres i to atoms j, against their distance (module docstring).

    Attributes
    ----------
    centres, partners : int arrays ``[n_pairs]``
        i (the atom whose force is watched) and j (the atom that moves), j ≠ i.
    distances : ``[n_pairs]``
        r_ij, Å (minimum image in a periodic cell, where the response sums over all images of j).
    response : ``[n_pairs]``
        K_ij = ‖∂F_i/∂R_j‖₂, eV/Å².
    blocks : ``[n_pairs, 3, 3]``
        ∂F_i/∂R_j, eV/Å² (row: force component, column: displacement component).
    method : str
        How the blocks were obtained, e.g. ``"central differences, delta = 0.01 Å"``.
    reference : str
        The reference's name.
    noise : float
        Estimated numerical noise of K, eV/Å² (module docstring).
    formula : str
    """

    centres: np.ndarray
    partners: np.ndarray
    distances: np.ndarray
    response: np.ndarray
    blocks: np.ndarray
    method: str
    reference: str
    noise: float = 0.0
    formula: str = ""
    fit_window: tuple[float | None, float | None] = (None, None)
    _fit: DecayFit | None = field(default=None, repr=False)

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, int, float, float, np.ndarray]], **meta) -> ForceResponse:
        """From ``(centre, partner, distance, K, block)`` rows; ``meta``: the other fields."""
        columns = list(zip(*rows)) if rows else [[]] * 5
        names = ("centres", "partners", "distances", "response", "blocks")
        return cls(**{name: np.array(values) for name, values in zip(names, columns)}, **meta)

    @property
    def max_distance(self) -> float:
        """The longest sampled distance, Å: beyond it the structure says nothing."""
        return float(self.distances.max())

    def default_window(self) -> tuple[float, float | None]:
        """The fit window used when none is given: from 1.5 × the shortest pair distance (past the
        bonded neighbours), to the longest."""
        lo, hi = self.fit_window
        return (1.5 * float(self.distances.min()) if lo is None else lo, hi)

    @property
    def fit(self) -> DecayFit:
        """Exponential and power-law fits of the tail envelope in :meth:`default_window`, ignoring
        responses at or below ``noise``."""
        if self._fit is None:
            self._fit = fit_decay(
                self.distances, self.response, self.default_window(), floor=self.noise, what="force response"
            )
        return self._fit

    def neglected_force(self, cutoff: float, amplitude_A: float = 0.1, kind: str = "sum") -> float:
        """max_i ΔF_i(r_c), eV/Å: the force a cutoff neglects for displacements of ``amplitude_A``
        (``kind`` ``"sum"``: all atoms beyond move, a bound; ``"max"``: the worst single atom)."""
        if kind not in ("sum", "max"):
            raise ValueError(f"kind must be 'sum' or 'max', got {kind!r}")
        if not amplitude_A > 0:
            raise ValueError(f"amplitude_A must be positive (Å), got {amplitude_A!r}")
        worst = 0.0
        for c in np.unique(self.centres):
            beyond = (self.centres == c) & (self.distances > cutoff + 1e-9)
            if beyond.any():
                k = self.response[beyond]
                worst = max(worst, float(k.sum() if kind == "sum" else k.max()))
        return amplitude_A * worst

    def cutoff_for(self, tolerance: float, amplitude_A: float = 0.1, kind: str = "sum") -> float:
        """The smallest cutoff r_c (Å, a sampled pair distance or 0) with
        :meth:`neglected_force` ≤ ``tolerance`` (eV/Å).

        Warns when the answer is the longest sampled distance: the structure is then too small to
        say how much further the response reaches, and the value is only a lower bound.

        Raises
        ------
        ValueError
            ``tolerance`` or ``amplitude_A`` not positive, ``kind`` not ``"sum"``/``"max"``.
        """
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance > 0:
            raise ValueError(f"tolerance must be a positive force in eV/Å, got {tolerance!r}")
        for r in np.concatenate([[0.0], np.unique(np.round(self.distances, 9))]):
            if self.neglected_force(float(r), amplitude_A, kind) <= tolerance:
                if r >= self.max_distance - 1e-9:
                    warnings.warn(
                        f"force response of {self.formula}: a tolerance of {tolerance:g} eV/Å needs every "
                        f"sampled pair (up to {self.max_distance:.2f} Å); the structure is too small to "
                        "resolve the cutoff, which is at least this",
                        stacklevel=2,
                    )
                return float(r)
        raise AssertionError("unreachable: no pair lies beyond the longest distance")

    @classmethod
    def from_dict(cls, data: dict) -> ForceResponse:
        """The result back from :meth:`to_dict` (the 3×3 blocks are not stored: NaN)."""
        pairs = data["pairs"]
        return cls(
            centres=np.array([p["centre"] for p in pairs], dtype=int),
            partners=np.array([p["partner"] for p in pairs], dtype=int),
            distances=np.array([p["distance_A"] for p in pairs], dtype=float),
            response=np.array([p["response_eV_per_A2"] for p in pairs], dtype=float),
            blocks=np.full((len(pairs), 3, 3), np.nan),
            method=data.get("method", ""),
            reference=data.get("reference", ""),
            noise=float(data.get("noise_eV_per_A2", 0.0)),
            formula=data.get("formula", ""),
            fit_window=tuple(data.get("fit_window", (None, None))),
        )

    def to_dict(self) -> dict:
        """JSON-ready summary: the pairs, the fit (or why it failed), the noise."""
        fit = fit_or_reason(self)
        return {
            "formula": self.formula,
            "reference": self.reference,
            "method": self.method,
            "response_definition": "K_ij = spectral norm of dF_i/dR_j (eV/A^2)",
            "noise_eV_per_A2": self.noise,
            "fit_window": list(self.fit_window),
            "fit": fit,
            "pairs": [
                {"centre": int(i), "partner": int(j), "distance_A": float(r), "response_eV_per_A2": float(k)}
                for i, j, r, k in zip(self.centres, self.partners, self.distances, self.response)
            ],
        }


def force_response(
    atoms: Atoms,
    reference: ForceReference,
    centres: Sequence[int] | None = None,
    delta: float = 0.01,
    fit_window: tuple[float | None, float | None] = (None, None),
    progress: Callable[[str], None] | None = None,
) -> ForceResponse:
    """Force responses K_ij of ``centres`` to every other atom, by central differences.

    Parameters
    ----------
    atoms : Atoms
        The structure (≥ 2 atoms); a molecule or a periodic cell.
    reference : ASE calculator, ``nearsight.qm`` oracle, or function ``atoms -> forces``
        The method whose locality is measured.  Its numerical precision sets the noise floor:
        converge SCF tightly (forces to ~1e-6 eV/Å) to see responses of ~1e-4 eV/Å².
    centres : sequence of int, optional
        Atoms whose forces are watched (default: all).  Only they are displaced: 6 force
        calculations each (module docstring).
    delta : float
        Displacement, Å (> 0).
    fit_window : (r_min, r_max)
        Distances (Å) of the decay fit; None ends: see :meth:`ForceResponse.default_window`.
    progress : callable, optional
        Called with a line of text after each centre.

    Returns
    -------
    ForceResponse

    Raises
    ------
    ValueError
        Fewer than 2 atoms, a centre that is not an atom index, ``delta`` ≤ 0, a failed reference.
    """
    if (
        isinstance(delta, bool)
        or not isinstance(delta, (int, float))
        or not delta > 0
        or not math.isfinite(delta)
    ):
        raise ValueError(f"force response: delta must be a positive displacement in Å, got {delta!r}")
    idx = check_centres(atoms, centres)
    n = len(atoms)
    columns = {}  # centre -> [n, 3 (force), 3 (displacement)]: dF_j/dR_c
    for c in idx:
        col = np.zeros((n, 3, 3))
        for a in range(3):
            shifted = []
            for sign in (1.0, -1.0):
                probe = atoms.copy()
                probe.positions[c, a] += sign * delta
                shifted.append(forces_of(probe, reference))
            col[:, :, a] = (shifted[0] - shifted[1]) / (2.0 * delta)
        columns[int(c)] = col
        if progress is not None:
            progress(f"centre {c} ({atoms[c].symbol}): 6 force calculations done")
    noise = max(float(np.linalg.norm(col.sum(0), 2)) for col in columns.values()) / math.sqrt(n)
    for a in columns:
        for b in columns:
            if a < b:  # dF_a/dR_b = (dF_b/dR_a)^T
                noise = max(noise, float(np.abs(columns[b][a] - columns[a][b].T).max()))
    rows = []
    for c, col in columns.items():
        dist = _pair_distances(atoms, c)
        for j in range(n):
            if j != c:
                block = col[j].T  # dF_c/dR_j by the symmetry of the Hessian
                rows.append((c, j, dist[j], np.linalg.norm(block, 2), block))
    return ForceResponse.from_rows(
        rows,
        method=f"central differences, delta = {delta:g} A",
        reference=reference_name(reference),
        noise=noise,
        formula=atoms.get_chemical_formula(),
        fit_window=fit_window,
    )
