"""Real solid harmonics r^l Y_lm of many points at once (orthonormal real spherical harmonics times
r^l), by the recurrence of the regular solid harmonics: what SOAP's angular expansion uses."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..nn import is_tracing


def real_solid_harmonics(vec: torch.Tensor, l_max: int, dim: int = -1) -> torch.Tensor:
    """``r^l Y_lm(r̂)`` for orthonormal real spherical harmonics, ``[..., (l_max+1)²]`` (the
    harmonics axis inserted at ``dim`` of the output).

    Columns run l = 0..l_max and, within l, m = -l..l (sine terms for m < 0).
    """
    flat = solid_harmonics_lm_first(vec.reshape(-1, 3).T, l_max)  # [LM, P]
    out = flat.T.reshape(*vec.shape[:-1], flat.shape[0])
    return out if dim in (-1, out.ndim - 1) else out.movedim(-1, dim)


def _harmonic_constants(l_max: int, dtype: torch.dtype, device: str) -> list[tuple[torch.Tensor, ...]]:
    """Per l >= 1: recurrence factors a [l, 1], b [l-1, 1] and the norms of m = 0..l [l+1, 1]
    (cached, except while traced for export: a traced graph's tensors must not outlive it)."""
    if is_tracing():
        return _harmonic_constants_fresh(l_max, dtype, device)
    return _harmonic_constants_cached(l_max, dtype, device)


def _harmonic_constants_fresh(l_max: int, dtype: torch.dtype, device: str) -> list[tuple[torch.Tensor, ...]]:
    out = []
    for l in range(1, l_max + 1):
        m = np.arange(l)
        a = (2 * l - 1) / (l - m)
        b = (l + m[:-1] - 1) / (l - m[:-1])
        norm = np.array(
            [
                math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - k) / math.factorial(l + k))
                for k in range(l + 1)
            ]
        )
        norm[1:] *= math.sqrt(2.0)
        out.append(
            tuple(torch.as_tensor(v, dtype=dtype, device=device)[:, None] for v in (a, b, norm))
            + (float(np.prod(np.arange(1, 2 * l, 2))),)  # (2l-1)!!
        )
    return out


_harmonic_constants_cached = functools.lru_cache(maxsize=32)(_harmonic_constants_fresh)


def solid_harmonics_lm_first(xyz: torch.Tensor, l_max: int, m_order: bool = True) -> torch.Tensor:
    """``r^l Y_lm`` of points ``xyz [3, P]`` as ``[(l_max+1)², P]`` (order as above; with
    ``m_order=False`` the sine terms of each l run m = -1..-l instead, which saves a flip
    per l where only sums over m matter, as in the power spectrum).

    With F_lm = r^l P_l^m(cos θ) e^{imφ} = Q_lm(z, r²) (x + iy)^m, the polynomials Q follow
    the recurrence of the regular solid harmonics, vectorised over m,

        Q_mm = (2m-1)!!,   (l-m) Q_lm = (2l-1) z Q_{l-1,m} - (l+m-1) r² Q_{l-2,m},

    and (x + iy)^m comes from complex products: no division by r, few tensor operations
    (which matters under double backward).  The points run along the last, contiguous axis,
    so every operation broadcasts over a long inner axis (fast) rather than a short one.
    """
    x, y, z = xyz[0:1], xyz[1:2], xyz[2:3]  # [1, P]
    rows = [torch.full_like(x, math.sqrt(1.0 / (4.0 * math.pi)))]
    if l_max == 0:
        return rows[0]
    r2 = x * x + y * y + z * z
    xy = torch.complex(x[0], y[0])
    powers = [xy]
    for _ in range(1, l_max):
        powers.append(powers[-1] * xy)
    re_im = torch.view_as_real(torch.stack(powers))  # [l_max, P, 2]: (x + iy)^m, m = 1..l_max
    cos_m = torch.cat([torch.ones_like(x), re_im[..., 0]])  # [l_max + 1, P], m = 0..l_max
    sin_m = re_im[..., 1]  # m = 1..l_max
    q_prev2, q_prev = None, torch.ones_like(x)  # Q_00
    for l, (a, b, norm, double_factorial) in enumerate(
        _harmonic_constants(l_max, xyz.dtype, str(xyz.device)), 1
    ):
        up = (a * z) * q_prev  # [l, P], m = 0..l-1
        if q_prev2 is not None:
            up = torch.cat([up[:-1] - (b * r2) * q_prev2, up[-1:]])
        q = torch.cat([up, torch.full_like(x, double_factorial)])  # Q_l: [l+1, P]
        nq = norm * q
        sines = nq[1:] * sin_m[:l]
        rows.append(sines.flip(0) if m_order else sines)
        rows.append(nq * cos_m[: l + 1])
        q_prev2, q_prev = q_prev, q
    return torch.cat(rows)
