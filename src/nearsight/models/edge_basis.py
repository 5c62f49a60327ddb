"""What the equivariant model sees of an edge, and how it finds an atom's edges.

* Angular: real spherical harmonics Y_lm(r̂) up to ``sh_l_max``, as polynomials in the components
  of the unit vector r̂ (their monomials' exponents and coefficients come from
  :func:`~nearsight.models.irreps.sh_polynomials`, built once).
* Radial: Bessel functions √(2/r_c) sin(nπr/r_c)/r times the polynomial envelope u_p(r/r_c)
  (DimeNet), which goes to zero with its first two derivatives at r_c, so every message fades out
  smoothly at the cutoff and is exactly zero beyond it (the dummy edge of the padded lists).
* Neighbour layout: each atom's edges in a padded ``[n_atoms, n_nb]`` table, so a layer's
  convolution is one batched matmul per atom and needs no scatter.
"""

from __future__ import annotations

import math

import torch


def edge_basis(
    vectors: torch.Tensor,
    sh_exponents: torch.Tensor,
    sh_coefficients: torch.Tensor,
    sh_l_max: int,
    bessel_n: torch.Tensor,
    cutoff: float,
    envelope_p: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical harmonics ``[E, (l+1)²]`` and enveloped Bessel features ``[E, n_radial]`` of the
    edge vectors ``[E, 3]`` (Å); ``bessel_n`` ``[n_radial]`` holds nπ/r_c."""
    r = torch.linalg.vector_norm(vectors, dim=-1)  # [E]
    u = vectors / r[:, None]
    e = sh_exponents  # [n_mono, 3]
    powers = [u.new_ones(u.shape[0], 3), u]
    for _ in range(2, sh_l_max + 1):
        powers.append(powers[-1] * u)
    pw = torch.stack(powers, 2)  # [E, 3, l+1]: u_k^q
    mono = (
        pw[:, 0].index_select(1, e[:, 0])
        * pw[:, 1].index_select(1, e[:, 1])
        * pw[:, 2].index_select(1, e[:, 2])
    )
    Y = mono @ sh_coefficients
    x = r / cutoff
    p = envelope_p
    env = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    env = torch.where(x < 1, env, torch.zeros_like(env))
    bessel = math.sqrt(2.0 / cutoff) * torch.sin(r[:, None] * bessel_n) / r[:, None]
    return Y, bessel * env[:, None]


def neighbour_layout(centres: torch.Tensor, n_atoms: int, n_slots: int = -1) -> tuple[torch.Tensor, int]:
    """Index ``[n_atoms * n_nb]`` of each atom's edges, padded with ``n_edges`` (a dummy row);
    ``n_nb`` is the largest neighbour count, or ``n_slots`` when given (traced for export: a
    size of the inputs; the caller guarantees it is at least the largest count)."""
    E = centres.shape[0]
    counts = torch.zeros(n_atoms, dtype=torch.int64, device=centres.device).index_add_(
        0, centres, torch.ones_like(centres)
    )
    n_nb = n_slots
    if n_slots < 0:
        n_nb = int(counts.max()) if E > 0 else 0
    order = torch.argsort(centres, stable=True)
    start = torch.cumsum(counts, 0) - counts
    sorted_c = centres[order]
    slot = torch.arange(E, device=centres.device) - start[sorted_c]
    pad = torch.full((n_atoms * n_nb,), E, dtype=torch.long, device=centres.device)
    pad[sorted_c * n_nb + slot] = order
    return pad, n_nb
