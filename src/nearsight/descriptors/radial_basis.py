"""The radial bases of SOAP (DScribe's definitions): Gaussian-type orbitals orthonormalised on
[0, r_cut], and the polynomial basis (r_cut − r)^(α+2) with its Gauss-Legendre quadrature."""

from __future__ import annotations

import numpy as np

DECAY = 1e-3  # DScribe: GTOs decay to this at their radii; Gaussian padding threshold


def gto_basis(r_cut: float, n_max: int, l_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Exponents ``alpha [l_max+1, n_max]`` and orthonormalising ``beta [l_max+1, n_max, n_max]``."""
    from scipy.linalg import inv, sqrtm
    from scipy.special import gamma

    radii = np.linspace(1.0, r_cut, n_max)
    alphas = np.zeros((l_max + 1, n_max))
    betas = np.zeros((l_max + 1, n_max, n_max))
    for l in range(l_max + 1):
        a = -np.log(DECAY / radii**l) / radii**2
        overlap = 0.5 * gamma(l + 1.5) * (a[:, None] + a[None, :]) ** (-l - 1.5)
        b = sqrtm(inv(overlap))
        if np.iscomplexobj(b):
            raise ValueError(
                f"the GTO basis (r_cut={r_cut}, n_max={n_max}, l={l}) cannot be orthonormalised in "
                "real numbers; lower n_max or raise r_cut"
            )
        alphas[l], betas[l] = a, b
    return alphas, betas


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [-1, 1], Newton-polished in extended precision so
    the nodes are correctly rounded (the polynomial basis is ill-conditioned enough for
    one-ulp differences in the nodes to show)."""
    x = np.polynomial.legendre.leggauss(n)[0].astype(np.longdouble)

    def legendre(x):
        p0, p1 = np.ones_like(x), x.copy()
        for k in range(2, n + 1):
            p0, p1 = p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k
        return p1, n * (x * p1 - p0) / (x * x - 1)

    for _ in range(3):
        p, dp = legendre(x)
        x = x - p / dp
    _, dp = legendre(x)
    return x.astype(np.float64), (2 / ((1 - x * x) * dp * dp)).astype(np.float64)


def polynomial_basis(r_cut: float, n_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quadrature nodes ``r [100]``, weights ``[100]`` (on [-1, 1]) and basis values ``g [n_max, 100]``."""
    from scipy.linalg import sqrtm

    # Overlaps ∫ (r_c - r)^(a+2) (r_c - r)^(b+2) r² dr, evaluated term by term as DScribe does:
    # the matrix is ill-conditioned for large n_max, so its rounding decides the basis.
    overlap = np.zeros((n_max, n_max))
    for a in range(1, n_max + 1):
        for b in range(1, n_max + 1):
            overlap[a - 1, b - 1] = (2 * r_cut ** (7 + a + b)) / ((5 + a + b) * (6 + a + b) * (7 + a + b))
    betas = sqrtm(np.linalg.inv(overlap))
    if np.iscomplexobj(betas):
        raise ValueError(
            f"the polynomial basis (r_cut={r_cut}, n_max={n_max}) cannot be orthonormalised in "
            "real numbers; lower n_max"
        )
    x, weights = gauss_legendre(100)
    r = r_cut * 0.5 * (x + 1.0)
    values = np.stack([(r_cut - np.clip(r, 0.0, r_cut)) ** (k + 2) for k in range(1, n_max + 1)])
    return r, weights, betas @ values
