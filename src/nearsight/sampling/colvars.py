"""Collective variables s(R) with their analytic gradients ∂s/∂R (and strain derivatives).

Every CV here returns, for a structure, a :class:`CVValue`: the value s, the gradient
∂s/∂R_i of the atoms it reads (``CVValue.gradient`` gives the full [n_atoms, 3] array) and, for CVs built
from relative vectors d_p only (distance, angle, dihedral, coordination number), the tensor
W = Σ_p (∂s/∂d_p) ⊗ d_p, which is ∂s/∂ε under a homogeneous strain ε (the bias stress comes
from it; see :mod:`nearsight.sampling.bias`).  Relative vectors are minimum-image vectors
(:func:`ase.geometry.find_mic`) along periodic directions, so a bond across a periodic
boundary has its short length.  Units: Å for lengths, radians for angles (so a spring
constant on an angle is in eV/rad²), a coordination number is a pure number.

The indices of a CV are checked against the structure at every evaluation: an index that
does not exist raises a ``ValueError`` naming it and the number of atoms.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.geometry import find_mic

AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


@dataclass
class CVValue:
    """A CV evaluated on one structure: s, and ∂s/∂R on the atoms it reads (each listed once)."""

    value: float
    atoms: np.ndarray  # [m] int, distinct atom indices
    local_gradient: np.ndarray  # [m, 3] ∂s/∂R of those atoms, unit of s per Å
    strain_derivative: np.ndarray | None  # [3, 3] ∂s/∂ε = Σ_p (∂s/∂d_p) ⊗ d_p; None: not defined
    n_atoms: int

    @property
    def gradient(self) -> np.ndarray:
        """∂s/∂R for every atom, [n_atoms, 3] (zero for atoms the CV does not read)."""
        grad = np.zeros((self.n_atoms, 3))
        grad[self.atoms] = self.local_gradient
        return grad


@dataclass
class CVColumn:
    """One CV of each of several walkers: values and the concatenated sparse gradients."""

    values: np.ndarray  # [n_walkers]
    atoms: np.ndarray  # [n_rows] int, atom of each gradient row
    owner: np.ndarray  # [n_rows] int, walker of each gradient row
    local_gradient: np.ndarray  # [n_rows, 3]
    strain_derivative: np.ndarray | None  # [n_walkers, 3, 3]; None if any walker's is undefined


def evaluate_column(cvs: Sequence[CollectiveVariable], atoms: Atoms) -> CVColumn:
    """Evaluate the CVs ``cvs`` (one per walker) on ``atoms``; vectorised where the class allows."""
    kind = type(cvs[0])
    if all(type(cv) is kind for cv in cvs):
        return kind._evaluate_column(cvs, atoms)
    return CollectiveVariable._evaluate_column(cvs, atoms)


def wrap_periodic(delta: np.ndarray | float, period: float | None) -> np.ndarray | float:
    """``delta`` mapped into [-period/2, period/2) (unchanged for a non-periodic CV)."""
    if period is None:
        return delta
    return (np.asarray(delta) + 0.5 * period) % period - 0.5 * period


class CollectiveVariable(ABC):
    """Base class: checks the indices, then :meth:`_evaluate` computes value and derivatives.

    ``period``: the period of a periodic CV (2π for a dihedral), None otherwise.  Biases take
    differences of periodic CVs through :func:`wrap_periodic`.
    """

    period: float | None = None
    kind: str = ""

    @property
    @abstractmethod
    def indices(self) -> tuple[int, ...]:
        """Every atom index the CV reads."""

    @abstractmethod
    def _evaluate(self, atoms: Atoms) -> CVValue: ...

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A plain-data spec that :func:`cv_from_dict` turns back into the CV."""

    def validate(self, atoms: Atoms) -> None:
        """Raise ``ValueError`` naming the first index that ``atoms`` does not have."""
        n = len(atoms)
        if max(self.indices) < n:
            return
        for i in self.indices:
            if i >= n:
                raise ValueError(
                    f"{self!r}: atom index {i} does not exist in a structure of {n} atoms "
                    f"(valid indices 0..{n - 1})"
                )

    def evaluate(self, atoms: Atoms) -> CVValue:
        """s(R), ∂s/∂R and ∂s/∂ε of ``atoms`` (after checking the indices)."""
        self.validate(atoms)
        return self._evaluate(atoms)

    @staticmethod
    def _evaluate_column(cvs: Sequence[CollectiveVariable], atoms: Atoms) -> CVColumn:
        """Several CVs at once (a loop here; subclasses may vectorise)."""
        values = [cv.evaluate(atoms) for cv in cvs]
        strain = [v.strain_derivative for v in values]
        return CVColumn(
            np.array([v.value for v in values]),
            np.concatenate([v.atoms for v in values]),
            np.concatenate([np.full(len(v.atoms), w) for w, v in enumerate(values)]),
            np.concatenate([v.local_gradient for v in values]),
            None if any(x is None for x in strain) else np.stack(strain),
        )

    def __call__(self, atoms: Atoms) -> float:
        return self.evaluate(atoms).value

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"


def _relative(atoms: Atoms, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Minimum-image vectors R_end - R_start, [n_pairs, 3] (plain differences without pbc)."""
    pos = atoms.positions
    d = pos[end] - pos[start]
    if atoms.pbc.any():
        d, _ = find_mic(d, atoms.cell, atoms.pbc)
    return d


def _check_index(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what}: atom index {value!r} must be an integer")
    if value < 0:
        raise ValueError(f"{what}: atom index {value} must be >= 0")
    return int(value)


class Distance(CollectiveVariable):
    """s = |d|, d = R_j - R_i (minimum image).  ∂s/∂R_j = d/|d| = -∂s/∂R_i."""

    kind = "distance"

    def __init__(self, i: int, j: int) -> None:
        self.i, self.j = _check_index(i, "Distance"), _check_index(j, "Distance")
        if self.i == self.j:
            raise ValueError(f"Distance: the two atoms must differ, got {i} and {j}")

    @property
    def indices(self) -> tuple[int, ...]:
        return (self.i, self.j)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "atoms": [self.i, self.j]}

    def _evaluate(self, atoms: Atoms) -> CVValue:
        d = _relative(atoms, np.array([self.i]), np.array([self.j]))[0]
        r = float(np.linalg.norm(d))
        if r == 0.0:
            raise ValueError(f"{self!r}: atoms {self.i} and {self.j} coincide, the gradient is undefined")
        grad = np.stack([-d / r, d / r])
        return CVValue(r, np.array(self.indices), grad, np.outer(d / r, d), len(atoms))


class Angle(CollectiveVariable):
    """θ ∈ [0, π] at atom j between u = R_i - R_j and v = R_k - R_j, θ = atan2(|u×v|, u·v).

    ∂θ/∂u = (cosθ û - v̂)/(|u| sinθ), ∂θ/∂v = (cosθ v̂ - û)/(|v| sinθ),
    ∂θ/∂R_j = -(∂θ/∂u + ∂θ/∂v); the gradient is undefined at θ = 0 or π (a ValueError there).
    """

    kind = "angle"

    def __init__(self, i: int, j: int, k: int) -> None:
        self.i, self.j, self.k = (_check_index(a, "Angle") for a in (i, j, k))
        if len({self.i, self.j, self.k}) < 3:
            raise ValueError(f"Angle: the three atoms must differ, got {i}, {j}, {k}")

    @property
    def indices(self) -> tuple[int, ...]:
        return (self.i, self.j, self.k)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "atoms": [self.i, self.j, self.k]}

    def _evaluate(self, atoms: Atoms) -> CVValue:
        u, v = _relative(atoms, np.array([self.j, self.j]), np.array([self.i, self.k]))
        lu, lv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
        uh, vh = u / lu, v / lv
        cos, sin = float(uh @ vh), float(np.linalg.norm(np.cross(uh, vh)))
        if sin < 1e-10:
            raise ValueError(f"{self!r}: the angle is 0 or 180 degrees, its gradient is undefined")
        theta = math.atan2(sin, cos)
        gu = (cos * uh - vh) / (lu * sin)
        gv = (cos * vh - uh) / (lv * sin)
        grad = np.stack([gu, -(gu + gv), gv])
        return CVValue(theta, np.array(self.indices), grad, np.outer(gu, u) + np.outer(gv, v), len(atoms))


class Dihedral(CollectiveVariable):
    """φ ∈ (-π, π] of the bonds b1 = R_j - R_i, b2 = R_k - R_j, b3 = R_l - R_k (IUPAC sign; trans = π).

    φ = atan2(|b2| b1·n2, n1·n2) with n1 = b1×b2, n2 = b2×b3; gradients (Blondel & Karplus,
    J. Comput. Chem. 17, 1132 (1996)): ∂φ/∂R_i = -|b2| n1/|n1|², ∂φ/∂R_l = |b2| n2/|n2|²,
    ∂φ/∂R_j = -(1 + b1·b2/|b2|²) ∂φ/∂R_i + (b3·b2/|b2|²) ∂φ/∂R_l, and ∂φ/∂R_k from
    Σ_i ∂φ/∂R_i = 0.
    Periodic with period 2π: biases use the wrapped difference, so a centre at π is continuous.
    """

    kind = "dihedral"
    period = 2 * math.pi

    def __init__(self, i: int, j: int, k: int, l: int) -> None:
        self.i, self.j, self.k, self.l = (_check_index(a, "Dihedral") for a in (i, j, k, l))
        if len(set(self.indices)) < 4:
            raise ValueError(f"Dihedral: the four atoms must differ, got {i}, {j}, {k}, {l}")

    @property
    def indices(self) -> tuple[int, ...]:
        return (self.i, self.j, self.k, self.l)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "atoms": list(self.indices)}

    def _evaluate(self, atoms: Atoms) -> CVValue:
        b1, b2, b3 = _relative(atoms, np.array([self.i, self.j, self.k]), np.array([self.j, self.k, self.l]))
        n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
        lb2, nn1, nn2 = float(np.linalg.norm(b2)), float(n1 @ n1), float(n2 @ n2)
        if nn1 < 1e-20 or nn2 < 1e-20:
            raise ValueError(f"{self!r}: three of the atoms are collinear, the dihedral is undefined")
        phi = math.atan2(lb2 * float(b1 @ n2), float(n1 @ n2))
        gi = -lb2 / nn1 * n1
        gl = lb2 / nn2 * n2
        p, q = float(b1 @ b2) / lb2**2, float(b3 @ b2) / lb2**2
        gj = -(1.0 + p) * gi + q * gl
        gk = p * gi - (1.0 + q) * gl
        # φ(b1, b2, b3): ∂φ/∂b1 = -gi, ∂φ/∂b2 = gk + gl, ∂φ/∂b3 = gl
        w = np.outer(-gi, b1) + np.outer(gk + gl, b2) + np.outer(gl, b3)
        return CVValue(phi, np.array(self.indices), np.stack([gi, gj, gk, gl]), w, len(atoms))


class CoordinationNumber(CollectiveVariable):
    """s = Σ_{pairs {a, b}, a ∈ A, b ∈ B, a ≠ b} f(r_ab), f(r) = (1 - (r/r0)^n) / (1 - (r/r0)^m).

    Each unordered pair counts once, also when the groups overlap.  f(r0) = n/m (the removable
    singularity is evaluated by its expansion f ≈ n/m (1 + (n - m)/2 · (r/r0 - 1)) within 1e-6).
    """

    kind = "coordination"

    def __init__(self, group_a: list[int], group_b: list[int], r0: float, n: int = 6, m: int = 12) -> None:
        self.group_a = [_check_index(a, "CoordinationNumber group_a") for a in group_a]
        self.group_b = [_check_index(b, "CoordinationNumber group_b") for b in group_b]
        if not (r0 > 0 and n > 0 and m > n):
            raise ValueError(f"CoordinationNumber: need r0 > 0 and m > n > 0, got r0={r0}, n={n}, m={m}")
        self.r0, self.n, self.m = float(r0), int(n), int(m)
        pairs = {tuple(sorted((a, b))) for a in self.group_a for b in self.group_b if a != b}
        if not pairs:
            raise ValueError("CoordinationNumber: the groups make no pair of different atoms")
        self._pairs = np.array(sorted(pairs), dtype=np.int64)  # [n_pairs, 2]
        self._atoms, inverse = np.unique(self._pairs, return_inverse=True)
        self._slot = inverse.reshape(self._pairs.shape)  # [n_pairs, 2] rows of the local gradient

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(self.group_a + self.group_b))

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "group_a": self.group_a,
            "group_b": self.group_b,
            "r0": self.r0,
            "n": self.n,
            "m": self.m,
        }

    def switching(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """f(r) and df/dr for distances ``r`` (Å)."""
        x = np.asarray(r, dtype=float) / self.r0
        n, m = self.n, self.m
        near = np.abs(x - 1.0) < 1e-6
        xs = np.where(near, 2.0, x)  # any value away from 1 for the exact branch
        num, den = 1.0 - xs**n, 1.0 - xs**m
        f = num / den
        df = (-n * xs ** (n - 1) * den + m * xs ** (m - 1) * num) / den**2
        f = np.where(near, n / m * (1.0 + 0.5 * (n - m) * (x - 1.0)), f)
        df = np.where(near, n * (n - m) / (2.0 * m), df)
        return f, df / self.r0

    def _evaluate(self, atoms: Atoms) -> CVValue:
        d = _relative(atoms, self._pairs[:, 0], self._pairs[:, 1])  # [n_pairs, 3]
        r = np.linalg.norm(d, axis=1)
        if np.any(r == 0):
            bad = self._pairs[np.argmin(r)]
            raise ValueError(f"{self!r}: atoms {bad[0]} and {bad[1]} coincide")
        f, df = self.switching(r)
        g = (df / r)[:, None] * d  # [n_pairs, 3] ∂f/∂d
        grad = np.zeros((len(self._atoms), 3))
        np.add.at(grad, self._slot[:, 1], g)
        np.add.at(grad, self._slot[:, 0], -g)
        return CVValue(float(f.sum()), self._atoms, grad, g.T @ d, len(atoms))


class Position(CollectiveVariable):
    """s = c·R_i, one Cartesian component (``direction="x"``) or a linear combination of them.

    ``direction`` is used as given (not normalised).  A position is not a relative vector: it
    has no strain derivative, so a bias on it gives no stress (see :class:`BiasedCalculator`),
    and it is not wrapped back into a periodic cell.
    """

    kind = "position"

    def __init__(self, index: int, direction: str | tuple[float, float, float] | list[float] = "x") -> None:
        self.index = _check_index(index, "Position")
        if isinstance(direction, str):
            if direction not in AXES:
                raise ValueError(f"Position: direction {direction!r} must be x, y, z or three numbers")
            vector = AXES[direction]
        else:
            vector = tuple(float(c) for c in direction)
            if len(vector) != 3 or not any(vector) or not all(map(math.isfinite, vector)):
                raise ValueError(f"Position: direction {direction!r} must be 3 finite numbers, not all 0")
        self.direction = np.array(vector)
        self._atoms, self._gradient = np.array([self.index]), self.direction.reshape(1, 3)
        self._spec = direction if isinstance(direction, str) else list(vector)

    @property
    def indices(self) -> tuple[int, ...]:
        return (self.index,)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "atom": self.index, "direction": self._spec}

    @staticmethod
    def _evaluate_column(cvs: Sequence[CollectiveVariable], atoms: Atoms) -> CVColumn:
        index = np.array([cv.index for cv in cvs])  # type: ignore[attr-defined]
        if index.max() >= len(atoms):
            cvs[int(np.argmax(index))].validate(atoms)  # raises, naming it
        direction = np.array([cv.direction for cv in cvs])  # type: ignore[attr-defined]
        values = np.einsum("wc,wc->w", direction, atoms.positions[index])
        return CVColumn(values, index, np.arange(len(cvs)), direction, None)

    def _evaluate(self, atoms: Atoms) -> CVValue:
        value = float(self.direction @ atoms.positions[self.index])
        return CVValue(value, self._atoms, self._gradient, None, len(atoms))


def cv_from_dict(spec: dict[str, Any], where: str = "cv") -> CollectiveVariable:
    """A CV from its spec, e.g. ``{"type": "distance", "atoms": [0, 1]}`` or ``{"type": "position",
    "atom": 0, "direction": "x"}``; unknown types and keys raise ``ValueError`` naming ``where``."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"{where}: {spec!r} must be a mapping with a 'type'")
    kind = spec["type"]
    n_atoms = {"distance": 2, "angle": 3, "dihedral": 4}
    allowed = {
        "distance": {"atoms"},
        "angle": {"atoms"},
        "dihedral": {"atoms"},
        "coordination": {"group_a", "group_b", "r0", "n", "m"},
        "position": {"atom", "direction"},
    }
    if kind not in allowed:
        raise ValueError(f"{where}: type {kind!r} is not one of {', '.join(allowed)}")
    unknown = sorted(set(spec) - allowed[kind] - {"type"})
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r} for type {kind!r} (allowed: {sorted(allowed[kind])})"
        )
    try:
        if kind in n_atoms:
            atoms = spec.get("atoms")
            if not isinstance(atoms, list) or len(atoms) != n_atoms[kind]:
                raise ValueError(f"atoms = {atoms!r} must be a list of {n_atoms[kind]} indices")
            return {"distance": Distance, "angle": Angle, "dihedral": Dihedral}[kind](*atoms)
        if kind == "coordination":
            extra = {k: spec[k] for k in ("n", "m") if k in spec}
            return CoordinationNumber(spec["group_a"], spec["group_b"], spec["r0"], **extra)
        return Position(spec["atom"], spec.get("direction", "x"))
    except KeyError as exc:
        raise ValueError(f"{where}: type {kind!r} needs the key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
