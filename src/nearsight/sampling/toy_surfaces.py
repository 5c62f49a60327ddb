"""Analytic model surfaces as ASE calculators, with their exact free energies by quadrature.

Each atom moves independently on the surface (the energy is a sum over atoms); the examples and
tests use one atom.  Both surfaces are separable from a harmonic confinement, so the free energy
of a CV built from x (and y) is a Boltzmann integral that :func:`exact_profile` evaluates on a
fine grid:  F(s) = -k_B T ln ∫ δ(s - s(r)) exp(-E(r)/k_B T) dr  (+ a constant).

* :class:`DoubleWell`: E = h ((x/a)² - 1)² + c x/a + k_⊥/2 (y² + z²).
* :class:`MuellerBrown`: the Müller-Brown surface (Müller & Brown, Theor. Chim. Acta 53, 75
  (1979)) in x, y (Å), times ``scale`` eV per Müller-Brown unit, plus k_z/2 z².
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes

from .bias import exact_changes, remember

# Müller-Brown parameters: E = Σ_k A_k exp(a_k (x - x0_k)² + b_k (x - x0_k)(y - y0_k) + c_k (y - y0_k)²)
_MB_A = np.array([-200.0, -100.0, -170.0, 15.0])
_MB_a = np.array([-1.0, -1.0, -6.5, 0.7])
_MB_b = np.array([0.0, 0.0, 11.0, 0.6])
_MB_c = np.array([-10.0, -10.0, -6.5, 0.7])
_MB_x0 = np.array([1.0, 0.0, -0.5, -1.0])
_MB_y0 = np.array([0.0, 0.5, 1.5, 1.0])


class _Surface(Calculator):
    """Energy E = Σ_atoms e(r_atom) of a per-atom analytic surface; subclasses give e and ∇e."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        return exact_changes(self.atoms, atoms)

    def energy_and_gradient(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """e [n] and ∇e [n, 3] at positions r [n, 3] (eV, eV/Å)."""
        raise NotImplementedError

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        remember(self, atoms)
        e, g = self.energy_and_gradient(self.atoms.positions)
        energy = float(e.sum())
        self.results = {"energy": energy, "free_energy": energy, "forces": -g}


class DoubleWell(_Surface):
    """e = h ((x/a)² - 1)² + c x/a + k_⊥/2 (y² + z²): minima near x = ±a, barrier ≈ h at x ≈ 0.

    ``barrier`` h (eV), ``half_width`` a (Å), ``tilt`` c (eV; c > 0 lowers the well at -a),
    ``k_perp`` (eV/Å²).
    """

    def __init__(
        self, barrier: float = 0.1, half_width: float = 1.0, tilt: float = 0.0, k_perp: float = 1.0
    ) -> None:
        super().__init__()
        if not (barrier > 0 and half_width > 0 and k_perp > 0):
            raise ValueError(
                f"DoubleWell: need barrier, half_width, k_perp > 0; got {barrier}, {half_width}, {k_perp}"
            )
        self.h, self.a, self.c, self.k_perp = float(barrier), float(half_width), float(tilt), float(k_perp)

    def energy_x(self, x: np.ndarray) -> np.ndarray:
        """The double-well part h ((x/a)² - 1)² + c x/a (eV) at x (Å)."""
        u = np.asarray(x, dtype=float) / self.a
        return self.h * (u * u - 1.0) ** 2 + self.c * u

    def energy_and_gradient(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y, z = r[:, 0], r[:, 1], r[:, 2]
        u = x / self.a
        e = self.energy_x(x) + 0.5 * self.k_perp * (y * y + z * z)
        g = np.stack(
            [(4 * self.h * u * (u * u - 1.0) + self.c) / self.a, self.k_perp * y, self.k_perp * z], 1
        )
        return e, g


class MuellerBrown(_Surface):
    """e = scale · E_MB(x, y) + k_z/2 z²; E_MB's minima: (-0.558, 1.442) -146.7, (0.623, 0.028) -108.2,
    (-0.050, 0.467) -80.8 (Müller-Brown units; x, y in Å here).  ``scale`` in eV per unit."""

    def __init__(self, scale: float = 0.002, k_z: float = 1.0) -> None:
        super().__init__()
        if not (scale > 0 and k_z > 0):
            raise ValueError(f"MuellerBrown: need scale > 0 and k_z > 0; got {scale}, {k_z}")
        self.scale, self.k_z = float(scale), float(k_z)

    def _terms(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx = np.asarray(x, dtype=float)[..., None] - _MB_x0
        dy = np.asarray(y, dtype=float)[..., None] - _MB_y0
        t = _MB_A * np.exp(_MB_a * dx * dx + _MB_b * dx * dy + _MB_c * dy * dy)
        return t, dx, dy

    def energy_xy(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """scale · E_MB(x, y) in eV, broadcast over x and y."""
        return self.scale * self._terms(x, y)[0].sum(-1)

    def energy_and_gradient(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t, dx, dy = self._terms(r[:, 0], r[:, 1])
        gx = (t * (2 * _MB_a * dx + _MB_b * dy)).sum(-1)
        gy = (t * (_MB_b * dx + 2 * _MB_c * dy)).sum(-1)
        e = self.scale * t.sum(-1) + 0.5 * self.k_z * r[:, 2] ** 2
        return e, np.stack([self.scale * gx, self.scale * gy, self.k_z * r[:, 2]], 1)


def exact_profile(
    energy: Callable[..., np.ndarray],
    cv: Callable[..., np.ndarray],
    grids: Sequence[np.ndarray],
    bin_edges: np.ndarray,
    temperature_K: float,
) -> np.ndarray:
    """Exact bin-averaged free energy (eV, minimum 0) of the CV ``cv`` on a surface, by quadrature.

    ``energy(*mesh)`` and ``cv(*mesh)`` take the coordinate meshes of ``grids`` (one fine, uniform
    1-D grid per coordinate the surface depends on; the harmonic directions integrate out to a
    constant).  F_b = -k_B T ln(∫_{s ∈ bin b} exp(-E/k_B T) dr / Δs_b): the quantity a histogram
    estimate of bin b converges to.  Bins with no grid point are NaN.
    """
    mesh = np.meshgrid(*grids, indexing="ij")
    e = energy(*mesh)
    boltzmann = np.exp(-(e - e.min()) / (units.kB * temperature_K))
    n_bins = len(bin_edges) - 1
    index = np.digitize(cv(*mesh).ravel(), bin_edges) - 1
    inside = (index >= 0) & (index < n_bins)
    weight = np.bincount(index[inside], boltzmann.ravel()[inside], minlength=n_bins)
    with np.errstate(divide="ignore"):
        f = -units.kB * temperature_K * np.log(weight / np.diff(bin_edges))
    f[~np.isfinite(f)] = np.nan
    return f - np.nanmin(f)
