"""Irreducible representations of O(3) as (l, parity) pairs, and the coefficients the equivariant
model builds once at construction: Wigner 3j symbols (e3nn), real spherical harmonics as polynomials
of the unit vector, and the symmetric coupling tensors U of MACE's higher-order products.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch

Irrep = tuple[int, int]  # (l, parity ±1)


def irrep_name(ir: Irrep) -> str:
    return f"{ir[0]}{'e' if ir[1] == 1 else 'o'}"


def irreps_up_to(l_max: int, parity: str) -> list[Irrep]:
    out: list[Irrep] = []
    for l in range(l_max + 1):
        natural = (-1) ** l
        out.append((l, natural))
        if parity == "both":
            out.append((l, -natural))
    return out


def irreps_dim(irreps: Sequence[Irrep]) -> int:
    return sum(2 * l + 1 for l, _ in irreps)


def irreps_offsets(irreps: Sequence[Irrep]) -> list[int]:
    return [0, *itertools.accumulate(2 * l + 1 for l, _ in irreps)]


def wigner_3j(l1: int, l2: int, l3: int) -> np.ndarray:
    """e3nn's real Wigner 3j symbol ``[2l1+1, 2l2+1, 2l3+1]`` (unit Frobenius norm), float64."""
    from e3nn import o3

    return o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()


def sh_polynomials(l_max: int) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """Monomials x^a y^b z^c (a+b+c = l ≤ l_max) and coefficients P with Y(r̂) = mono(r̂) @ P.

    e3nn's real spherical harmonics (component normalisation, |Y_l|² = 2l+1) are homogeneous
    polynomials of degree l; P is fitted exactly (least squares on random unit vectors).
    """
    from e3nn import o3

    monos = [
        (a, b, l - a - b) for l in range(l_max + 1) for a in range(l, -1, -1) for b in range(l - a, -1, -1)
    ]
    rng = np.random.default_rng(0)
    u = rng.standard_normal((400, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    dim = (l_max + 1) ** 2
    P = np.zeros((len(monos), dim))
    for l in range(l_max + 1):
        cols = [k for k, m in enumerate(monos) if sum(m) == l]
        X = np.stack(
            [u[:, 0] ** m[0] * u[:, 1] ** m[1] * u[:, 2] ** m[2] for m in (monos[k] for k in cols)], 1
        )
        Y = o3.spherical_harmonics(l, torch.from_numpy(u), normalize=True, normalization="component").numpy()
        coef, *_ = np.linalg.lstsq(X, Y, rcond=None)
        if np.abs(X @ coef - Y).max() > 1e-10:
            raise RuntimeError(f"spherical harmonics of degree {l} are not fitted by monomials")
        P[np.ix_(cols, range(l * l, (l + 1) ** 2))] = coef
    return monos, P


def symmetric_coupling(a_irreps: Sequence[Irrep], target: Irrep, nu: int) -> tuple[list[tuple], np.ndarray]:
    """Basis of equivariant degree-ν polynomial maps A -> V_target on distinct monomials of A.

    Returns (monomials as sorted index tuples, U ``[H, n_monomials, 2L+1]``).  Spanning set:
    every multiset of irrep blocks of A coupled left to right through every intermediate l;
    an SVD keeps an orthonormal basis of its span (each row is a linear combination of
    equivariant maps, hence equivariant).
    """
    L, P = target
    dim = irreps_dim(a_irreps)
    off = irreps_offsets(a_irreps)
    monos = list(itertools.combinations_with_replacement(range(dim), nu))
    mono_id = np.zeros((dim,) * nu, dtype=np.int64)
    for k, m in enumerate(monos):
        for perm in set(itertools.permutations(m)):
            mono_id[perm] = k
    rows = []
    for blocks in itertools.combinations_with_replacement(range(len(a_irreps)), nu):
        ls = [a_irreps[b][0] for b in blocks]
        if math.prod(a_irreps[b][1] for b in blocks) != P:
            continue
        # coupled tensors C[m_1, ..., m_ν, M] along all left-to-right intermediate paths
        tensors = [np.eye(2 * ls[0] + 1)]
        lcur = [ls[0]]
        for q in range(1, nu):
            new, new_l = [], []
            for C, lc in zip(tensors, lcur):
                for l_out in range(abs(lc - ls[q]), lc + ls[q] + 1):
                    if q == nu - 1 and l_out != L:
                        continue
                    new.append(np.einsum("...a,abc->...bc", C, wigner_3j(lc, ls[q], l_out)))
                    new_l.append(l_out)
            tensors, lcur = new, new_l
        if nu == 1:
            tensors = [t for t, lc in zip(tensors, lcur) if lc == L]
        for C in tensors:
            coef = np.zeros((len(monos), 2 * L + 1))
            idx = np.ix_(*[np.arange(off[b], off[b] + 2 * a_irreps[b][0] + 1) for b in blocks])
            ids = mono_id[idx]  # [2l_1+1, ..., 2l_ν+1]
            np.add.at(coef, ids.reshape(-1), C.reshape(-1, 2 * L + 1))
            rows.append(coef.reshape(-1))
    if not rows:
        return monos, np.zeros((0, len(monos), 2 * L + 1))
    _, s, vh = np.linalg.svd(np.stack(rows), full_matrices=False)
    rank = int((s > 1e-8).sum())  # rows are O(1); cancelled (antisymmetric) couplings are ~1e-16
    return monos, vh[:rank].reshape(rank, len(monos), 2 * L + 1)
