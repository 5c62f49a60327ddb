"""Bispectrum of the neighbour density: four-body invariants beside SOAP's power spectrum.

SOAP's power spectrum p_{nn'l} = Σ_m c_nlm c_n'lm is quadratic in the neighbour density, so it
sees pairs of neighbours around a centre: three-body correlations.  Environments that differ only
in how triplets of neighbours are arranged can share it.  The next order is cubic,

    b_{k1 k2 k3} = Σ_{m1 m2 m3} G^{l1 l2 l3}_{m1 m2 m3} c_{k1 m1} c_{k2 m2} c_{k3 m3},
    k = (Z, n, l),  G^{l1 l2 l3}_{m1 m2 m3} = ∫ Y_l1m1 Y_l2m2 Y_l3m3 dΩ  (real Gaunt coefficients),

which is rotation invariant because the real Gaunt tensor is (Bartók, Kondor & Csányi, PRB 87,
184115 (2013), the bispectrum; the ν = 3 invariants of the atomic cluster expansion, Drautz,
PRB 99, 014104 (2019)).  It is the body order that moment tensor potentials and ACE add over
SOAP-GAP.

Which triplets are kept:

* G vanishes unless l1 + l2 + l3 is even and |l1 − l2| <= l3 <= l1 + l2;
* b is symmetric under permuting the three channels, so only k1 <= k2 <= k3;
* triplets with an l = 0 channel are left out: there G reduces to δ_{m2 m3}/√(4π), so
  b = c_{k1 00} p_{k2 k3}/√(4π) is a product of lower-order invariants, which the network
  forms itself.

The Gaunt coefficients are computed once by quadrature of the same real harmonics the density
expansion uses (Gauss-Legendre in cos θ, uniform in φ, exact for these polynomial degrees), so the
table follows whatever order of m that expansion has.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .solid_harmonics import solid_harmonics_lm_first


def real_gaunt_table(l_max: int, m_order: bool = True) -> np.ndarray:
    """``G[lm1, lm2, lm3] = ∫ Y_lm1 Y_lm2 Y_lm3 dΩ`` for l <= ``l_max``, ``[(l_max+1)²] * 3``, in the
    column order of :func:`solid_harmonics_lm_first` with the same ``m_order``."""
    degree = 3 * l_max  # of the integrand in cos θ, and its largest frequency in φ
    x, w = np.polynomial.legendre.leggauss(degree // 2 + 1)
    n_phi = degree + 1
    phi = 2 * math.pi * np.arange(n_phi) / n_phi
    sin_t = np.sqrt(1.0 - x**2)
    pts = np.stack(
        [np.outer(sin_t, np.cos(phi)).ravel(), np.outer(sin_t, np.sin(phi)).ravel(), np.repeat(x, n_phi)]
    )
    weights = np.repeat(w, n_phi) * (2 * math.pi / n_phi)
    y = solid_harmonics_lm_first(torch.as_tensor(pts, dtype=torch.float64), l_max, m_order=m_order).numpy()
    table = np.einsum("ap,bp,cp,p->abc", y, y, y, weights)
    table[np.abs(table) < 1e-12] = 0.0
    return table


def bispectrum_channels(n_species: int, n_max: int, l_max: int) -> list[tuple[int, int, int]]:
    """Kept channel triplets ``(k1, k2, k3)``, k = (species · L + l) · n_max + n with L = l_max + 1,
    k1 <= k2 <= k3, no l = 0, l1 + l2 + l3 even and triangular; in that order."""
    n_l = l_max + 1
    channels = [(s, l, n) for s in range(n_species) for l in range(n_l) for n in range(n_max)]
    index = {ch: i for i, ch in enumerate(channels)}
    kept = []
    for a, (_, l1, _) in enumerate(channels):
        for b in range(a, len(channels)):
            l2 = channels[b][1]
            for c in range(b, len(channels)):
                l3 = channels[c][1]
                if 0 in (l1, l2, l3) or (l1 + l2 + l3) % 2 or not abs(l1 - l2) <= l3 <= l1 + l2:
                    continue
                kept.append((index[channels[a]], index[channels[b]], index[channels[c]]))
    return kept


def checked_spec(spec: dict, n_max: int, l_max: int) -> dict:
    """``{"n_max", "l_max"}`` of a bispectrum beside a power spectrum of ``n_max``, ``l_max``
    (defaults 4 and 3), or a ValueError that says what is wrong."""
    if not isinstance(spec, dict) or set(spec) - {"n_max", "l_max"}:
        raise ValueError(f"bispectrum must be a dict with keys n_max and l_max, got {spec!r}")
    n_b, l_b = spec.get("n_max", 4), spec.get("l_max", 3)
    for key, value in (("n_max", n_b), ("l_max", l_b)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"bispectrum {key} must be an integer >= 1, got {value!r}")
    if n_b == n_max and l_b > l_max:  # the shared expansion stops at l_max
        raise ValueError(f"bispectrum l_max {l_b} exceeds the power spectrum's {l_max} at equal n_max")
    return {"n_max": n_b, "l_max": l_b}


class Bispectrum(nn.Module):
    """Bispectrum features ``[n_atoms, n_features]`` from density coefficients
    ``[n_atoms, n_species, (l_max+1)², n_max]`` (the layout of :meth:`SOAP.coefficients`).

    Every feature is a short sum of products c·c·c with Gaunt weights: the nonzero terms of all
    features are gathered once ([n_atoms, n_terms]) and summed onto their features.
    """

    def __init__(self, n_species: int, n_max: int, l_max: int, m_order: bool = True, scale: float = 1.0):
        super().__init__()
        if l_max < 1:
            raise ValueError(f"the bispectrum needs l_max >= 1 (l = 0 triplets are left out), got {l_max}")
        self.n_species, self.n_max, self.l_max = int(n_species), int(n_max), int(l_max)
        gaunt = real_gaunt_table(self.l_max, m_order)
        n_lm = (self.l_max + 1) ** 2
        triplets = bispectrum_channels(self.n_species, self.n_max, self.l_max)
        self.n_features = len(triplets)

        def columns(k: int) -> tuple[int, list[int]]:
            """Flat columns of channel k's 2l+1 coefficients in ``[S, LM, N]``, and its l."""
            s, rest = divmod(k, (self.l_max + 1) * self.n_max)
            l, n = divmod(rest, self.n_max)
            return l, [(s * n_lm + lm) * self.n_max + n for lm in range(l * l, (l + 1) ** 2)]

        i1, i2, i3, coef, feature = [], [], [], [], []
        for f, ks in enumerate(triplets):
            (l1, c1), (l2, c2), (l3, c3) = (columns(k) for k in ks)
            block = gaunt[l1 * l1 : (l1 + 1) ** 2, l2 * l2 : (l2 + 1) ** 2, l3 * l3 : (l3 + 1) ** 2]
            for m1, m2, m3 in zip(*np.nonzero(block)):
                i1.append(c1[m1]), i2.append(c2[m2]), i3.append(c3[m3])
                coef.append(scale * block[m1, m2, m3]), feature.append(f)
        for name, values in (("i1", i1), ("i2", i2), ("i3", i3), ("feature", feature)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.int64), persistent=False)
        self.register_buffer("coef", torch.tensor(coef, dtype=torch.float64), persistent=False)

    def forward(self, coeff: torch.Tensor) -> torch.Tensor:
        flat = coeff.reshape(coeff.shape[0], -1)
        terms = flat[:, self.i1] * flat[:, self.i2] * flat[:, self.i3] * self.coef.to(flat.dtype)
        out = flat.new_zeros((flat.shape[0], self.n_features))
        return out.index_add(1, self.feature, terms)
