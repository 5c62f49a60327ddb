"""A sum of Gaussian hills tabulated on a regular grid (as PLUMED's GRID_MIN/GRID_MAX/GRID_BIN).

The exact sum over n hills costs O(n) per evaluation, so long multiple-walker runs slow down as
hills pile up.  On a grid each hill is added once, exactly at the nodes (value and gradient), and
V and ∂V/∂s anywhere are multilinear interpolations of the node values: the cost per evaluation
no longer grows.  Interpolating V between nodes spaced Δ errs by about (Δ/σ)²/8 of a hill's height,
so keep Δ ≲ σ/5.  Periodic CVs span their period with wrapped node indices; a point of a
non-periodic CV outside [lower, upper] raises a ``ValueError`` (widen the grid).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from .colvars import wrap_periodic


class HillGrid:
    """V(s) = Σ_i h_i exp(-Σ_d Δ_d²/(2σ_d²)) on nodes; ``spec[d] = (lower, upper, n_bins)``."""

    def __init__(
        self, spec: Sequence[tuple[float, float, int]], sigma: np.ndarray, periods: Sequence[float | None]
    ) -> None:
        if len(spec) != len(periods):
            raise ValueError(f"grid: one (lower, upper, bins) per CV ({len(periods)}), got {list(spec)}")
        self.spec = [(float(lo), float(hi), int(n)) for lo, hi, n in spec]
        self.periods = list(periods)
        self.sigma = np.asarray(sigma, dtype=float)
        axes, self.lower, self.spacing, self.n = [], [], [], []
        for (lo, hi, n), period in zip(self.spec, self.periods):
            if n < 2 or not hi > lo:
                raise ValueError(f"grid ({lo}, {hi}, {n}): need upper > lower and at least 2 bins")
            if period is not None:  # the full period, n nodes, the last wrapping onto the first
                lo, hi = -period / 2, period / 2
                axes.append(lo + (hi - lo) * np.arange(n) / n)
            else:
                axes.append(np.linspace(lo, hi, n + 1))
            self.lower.append(lo)
            self.spacing.append(axes[-1][1] - axes[-1][0])
            self.n.append(len(axes[-1]))
        mesh = np.meshgrid(*axes, indexing="ij")
        self.nodes = np.stack([m.ravel() for m in mesh], axis=1)  # [n_nodes, n_cvs]
        self.values = np.zeros(len(self.nodes))  # [n_nodes] eV
        self.gradients = np.zeros(self.nodes.shape)  # [n_nodes, n_cvs] eV per CV unit

    def add(self, centres: np.ndarray, heights: np.ndarray) -> None:
        """Add hills at ``centres`` [k, n_cvs] with ``heights`` [k] to the node values.

        Each hill is added on the nodes within 6σ of its centre (beyond, exp(-18) < 2e-8 of its
        height), so a hill costs O((12σ/Δ)^n_cvs), not O(n_nodes).
        """
        centres = np.asarray(centres, dtype=float).reshape(-1, len(self.n))
        values = self.values.reshape(self.n)
        gradients = self.gradients.reshape(*self.n, len(self.n))
        for centre, height in zip(centres, np.asarray(heights, dtype=float).reshape(-1)):
            index, delta = [], []
            for d, (period, n) in enumerate(zip(self.periods, self.n)):
                reach = int(np.ceil(6 * self.sigma[d] / self.spacing[d]))
                c = centre[d] if period is None else float(wrap_periodic(centre[d], period))
                mid = int(np.floor((c - self.lower[d]) / self.spacing[d]))
                i = np.arange(mid - reach, mid + reach + 2)
                if period is None:
                    i = i[(i >= 0) & (i < n)]
                    x = self.lower[d] + i * self.spacing[d] - c
                else:
                    x = wrap_periodic(self.lower[d] + i * self.spacing[d] - c, period)
                    i, first = np.unique(i % n, return_index=True)  # a period shorter than 12σ
                    x = x[first]
                index.append(i)
                delta.append(x)
            if any(len(i) == 0 for i in index):
                continue  # the hill lies beyond the grid
            mesh = np.meshgrid(*delta, indexing="ij")
            exponent = sum(-0.5 * (m / sig) ** 2 for m, sig in zip(mesh, self.sigma))
            g = height * np.exp(exponent)
            block = np.ix_(*index)
            values[block] += g
            for d, m in enumerate(mesh):
                gradients[block + (d,)] -= g * m / self.sigma[d] ** 2

    def evaluate(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Multilinear V [p] and ∂V/∂s [p, n_cvs] at points [p, n_cvs]."""
        points = np.asarray(points, dtype=float).reshape(-1, len(self.n))
        base, frac = [], []
        for d, (period, n) in enumerate(zip(self.periods, self.n)):
            x = points[:, d]
            if period is not None:
                x = wrap_periodic(x, period)
            u = (x - self.lower[d]) / self.spacing[d]
            i0 = np.floor(u).astype(np.int64)
            if period is None:
                bad = (u < 0) | (u > n - 1)
                if bad.any():
                    lo, hi, _ = self.spec[d]
                    raise ValueError(
                        f"CV {d} = {x[np.argmax(bad)]:.6g} is outside the metadynamics grid "
                        f"[{lo:g}, {hi:g}]: widen the grid"
                    )
                i0 = np.clip(i0, 0, n - 2)
            base.append(i0)
            frac.append(u - i0)
        strides = np.cumprod([1] + self.n[::-1][:-1])[::-1]
        v = np.zeros(len(points))
        dv = np.zeros(points.shape)
        for corner in itertools.product((0, 1), repeat=len(self.n)):
            index = np.zeros(len(points), dtype=np.int64)
            weight = np.ones(len(points))
            for d, c in enumerate(corner):
                i = base[d] + c
                if self.periods[d] is not None:
                    i %= self.n[d]
                index += i * strides[d]
                weight *= frac[d] if c else 1.0 - frac[d]
            v += weight * self.values[index]
            dv += weight[:, None] * self.gradients[index]
        return v, dv
