"""E(3)-equivariant message-passing potential: MACE-style higher-order messages, NequIP-style for ν = 1.

Per layer t (Batatia et al., NeurIPS 2022, eqs. 8-11; Batzner et al., Nat. Commun. 2022):

    h̃_j      = W_up h_j                                       (channel mixing per irrep)
    A_i,c,LM = (1/N̄) Σ_j Σ_paths R_path,c(r_ij) C^{LM}_{l1 m1, l2 m2} h̃_j,c,l1m1 Y_l2m2(r̂_ij)
    A'       = W_A A                  (W_A,Z_i in the first layer with element_mix, as MACE)
    B_i,c,LM = Σ_{ν=1}^{ν_max} Σ_η w^{(ν)}_{Z_i,η,c} Σ_{k} U^{(ν)}_{η,LM,k} Π_{q=1..ν} A'_i,c,k_q
    h_i      = W_B B_i + W_skip h_i        (t > 0; W_skip,Z_i with element_mix)
               gate: scalars SiLU, l > 0 features × sigmoid(gate scalars)
    ε_i      = s_{Z_i} Σ_t readout_t(h_i^{0e}) + e_{Z_i}

R(r) is an MLP (no biases) of Bessel functions √(2/r_c) sin(nπr/r_c)/r times the polynomial
envelope u_p(r/r_c) (DimeNet), so messages go to zero smoothly at r_c.  N̄ is the mean neighbour
count of the training set.  The products are channel-wise (depthwise), as in MACE.

Run time uses plain torch: e3nn builds the Clebsch-Gordan coefficients, the real spherical
harmonics (as polynomial coefficients of r̂) and the symmetric coupling tensors U once, at
construction.  The implementation is organised for CPU speed:

* the tensor product of every path into output block L is *one* batched matmul per atom over its
  padded neighbour list: ``[C, n_nb · k_L] @ [n_nb · k_L, 2L+1]``, where the right factor
  (CG ⊗ Y, no channel index) is per edge and the left (radial weight × neighbour feature) has no
  spherical index; no ``[n_edges, C, (l+1)²]`` message tensor is formed and no scatter is needed;
* the symmetric product works on *distinct monomials* of A (816 instead of 16³ = 4096 for ν = 3
  and 16 components) and only on those with a non-zero coupling to an output of their parity;
  the element weights are contracted with U once per call into ``T[Z, c, monomial, M]``.

Features may have natural parity only (``parity="natural"``: 0e, 1o, 2e, ...) or both parities
(``parity="both"``); the energy reads only 0e scalars, so it is invariant under reflections.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import List, Tuple  # noqa: UP035 - TorchScript attribute annotations

import numpy as np
import torch
from torch import nn

from .. import keys
from .bpnn import element_indices

Irrep = tuple[int, int]  # (l, parity ±1)

PRESETS: dict[str, dict] = {
    # MACE "small" at matched size: 32x0e + 32x1o, max_L 1, correlation 3, 2 layers, r_max 5
    "small": {"channels": 32, "l_max": 1, "sh_l_max": 3, "correlation": 3, "num_layers": 2},
    # MACE "medium": 128x0e + 128x1o
    "medium": {"channels": 128, "l_max": 1, "sh_l_max": 3, "correlation": 3, "num_layers": 2},
    # MACE "large": 128x0e + 128x1o + 128x2e
    "large": {"channels": 128, "l_max": 2, "sh_l_max": 3, "correlation": 3, "num_layers": 2},
}


def irrep_name(ir: Irrep) -> str:
    return f"{ir[0]}{'e' if ir[1] == 1 else 'o'}"


def _irreps(l_max: int, parity: str) -> list[Irrep]:
    out: list[Irrep] = []
    for l in range(l_max + 1):
        natural = (-1) ** l
        out.append((l, natural))
        if parity == "both":
            out.append((l, -natural))
    return out


def _dim(irreps: Sequence[Irrep]) -> int:
    return sum(2 * l + 1 for l, _ in irreps)


def _offsets(irreps: Sequence[Irrep]) -> list[int]:
    return [0, *itertools.accumulate(2 * l + 1 for l, _ in irreps)]


def _w3j(l1: int, l2: int, l3: int) -> np.ndarray:
    """e3nn's real Wigner 3j symbol ``[2l1+1, 2l2+1, 2l3+1]`` (unit Frobenius norm), float64."""
    from e3nn import o3

    return o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()


def _sh_polynomials(l_max: int) -> tuple[list[tuple[int, int, int]], np.ndarray]:
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


def _coupling(a_irreps: Sequence[Irrep], target: Irrep, nu: int) -> tuple[list[tuple], np.ndarray]:
    """Basis of equivariant degree-ν polynomial maps A -> V_target on distinct monomials of A.

    Returns (monomials as sorted index tuples, U ``[H, n_monomials, 2L+1]``).  Spanning set:
    every multiset of irrep blocks of A coupled left to right through every intermediate l;
    an SVD keeps an orthonormal basis of its span (each row is a linear combination of
    equivariant maps, hence equivariant).
    """
    L, P = target
    dim = _dim(a_irreps)
    off = _offsets(a_irreps)
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
                    new.append(np.einsum("...a,abc->...bc", C, _w3j(lc, ls[q], l_out)))
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


_CHUNK_ELEMENTS = 1 << 21  # per-chunk size of per-edge / per-monomial tensors (8 MiB in float32): fits L2/L3
_SILU_NORM = 1.679  # 1 / sqrt(E[silu(x)²]) for x ~ N(0, 1): keeps the second moment through layers


def _linear_weight(c_in: int, c_out: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(c_in, c_out) / math.sqrt(c_in))


def _stacked_weights(n: int, c_in: int, c_out: int) -> nn.Parameter:
    """``n`` channel-mixing matrices ``[n, c_in, c_out]`` (one per irrep)."""
    return nn.Parameter(torch.randn(n, c_in, c_out) / math.sqrt(c_in))


class _RadialMLP(nn.Module):
    """Bias-free MLP with SiLU: zero input (beyond the cutoff) gives zero output."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-2], sizes[1:-1]))
        self.out = nn.Linear(sizes[-2], sizes[-1], bias=False)
        self.silu_norm = _SILU_NORM
        with torch.no_grad():
            for lin in [*self.layers, self.out]:
                lin.weight.normal_(0.0, 1.0 / math.sqrt(lin.in_features))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """All but the last layer (the last is applied chunk by chunk by the convolution)."""
        for lin in self.layers:
            x = torch.nn.functional.silu(lin(x)) * self.silu_norm
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


def _mix(x: torch.Tensor, w: torch.Tensor, onehot: torch.Tensor, per_element: bool) -> torch.Tensor:
    """Channel mixing ``x [n, d, C] @ w``; with ``per_element``, ``w [C, Z·C']`` holds one matrix per
    element and each atom takes its own (``onehot [n, Z]``): x W_{z(i)}."""
    y = torch.matmul(x, w)
    Z = onehot.shape[1]
    if not per_element or Z == 1:
        return y
    y = y.view(x.shape[0], x.shape[1], Z, w.shape[1] // Z)
    return (y * onehot[:, None, :, None]).sum(2)


class _Interaction(nn.Module):
    """One message-passing layer: equivariant convolution, symmetric product, update, gate.

    Coefficients live in a few packed buffers with offsets (plain Python lists), so that the layer
    converts with ``.to(dtype)`` and compiles with TorchScript.
    """

    def __init__(
        self,
        in_irreps: list[Irrep],
        a_allowed: list[Irrep],
        out_irreps: list[Irrep],
        sh_l_max: int,
        channels: int,
        n_elements: int,
        correlation: int,
        n_radial: int,
        radial_hidden: Sequence[int],
        residual: bool,
        gate: bool,
        element_mix: bool = False,
    ) -> None:
        super().__init__()
        C = channels
        self.in_irreps = list(in_irreps)
        self.out_irreps = list(out_irreps)
        self.channels = C
        self.n_elements = n_elements
        self.chunk_elements = _CHUNK_ELEMENTS
        self.sh_dim = (sh_l_max + 1) ** 2
        self.w_up = _stacked_weights(len(in_irreps), C, C)

        # ---- convolution paths (l1,p1) x Y_l2 -> (l3,p3), grouped by output block
        paths: list[tuple[int, int, Irrep]] = []
        for i1, (l1, p1) in enumerate(in_irreps):
            for l2 in range(sh_l_max + 1):
                for l3 in range(abs(l1 - l2), l1 + l2 + 1):
                    ir3 = (l3, p1 * (-1) ** l2)
                    if ir3 in a_allowed:
                        paths.append((i1, l2, ir3))
        self.a_irreps = [ir for ir in a_allowed if any(p[2] == ir for p in paths)]
        self.n_paths = len(paths)
        self.block_k = []
        self.block_paths = []  # (path, input irrep) per output block
        self.in_dims = [2 * l + 1 for l, _ in in_irreps]
        self.cg_offsets = [0]
        cgs = []
        for ir3 in self.a_irreps:
            l3 = ir3[0]
            cg, segments = [], []
            for p, (i1, l2, ir) in enumerate(paths):
                if ir != ir3:
                    continue
                l1 = in_irreps[i1][0]
                segments.append((p, i1))
                w = _w3j(l1, l2, l3) * math.sqrt(2 * l3 + 1)  # [m1, m2, M]
                for m1 in range(2 * l1 + 1):
                    block = np.zeros((self.sh_dim, 2 * l3 + 1))
                    block[l2 * l2 : (l2 + 1) ** 2] = w[m1]
                    cg.append(block)
            # [sh_dim, k * (2l3+1)]: per-edge G = Y @ cg, k = (path, m1) pairs in path order
            cgs.append(np.stack(cg, 0).transpose(1, 0, 2).reshape(self.sh_dim, -1))
            self.cg_offsets.append(self.cg_offsets[-1] + cgs[-1].shape[1])
            self.block_k.append(len(cg))
            self.block_paths.append(segments)
        self.register_buffer("cg", torch.from_numpy(np.concatenate(cgs, 1)), persistent=False)
        self.radial = _RadialMLP([n_radial, *radial_hidden, self.n_paths * C])
        # element-dependent channel mixing (MACE's self-connection with the node attributes): of A
        # in the first layer (no residual), of the residual in later layers
        self.element_mix = element_mix
        self.mix_a = element_mix and not residual
        self.w_a = _stacked_weights(len(self.a_irreps), C, C * (n_elements if self.mix_a else 1))

        # ---- symmetric product of A (per channel) up to degree `correlation`
        a_dim = _dim(self.a_irreps)
        pairs = list(itertools.combinations_with_replacement(range(a_dim), 2))
        pair_id = {m: k for k, m in enumerate(pairs)}
        self.register_buffer("pair_a", torch.tensor([m[0] for m in pairs], dtype=torch.long), False)
        self.register_buffer("pair_b", torch.tensor([m[1] for m in pairs], dtype=torch.long), False)
        self.correlation = correlation
        parities = sorted({p for _, p in out_irreps}, reverse=True)
        self.group_irreps = []
        self.group_dims = []
        self.group_k = []
        # per group: offsets into mono_index of [deg1, deg2, deg3 prefix pair, deg3 last factor]
        self.mono_offsets = []
        # per output irrep (grouped order): (H, M) and offsets into U_all / rows of sc_weights
        self.sc_h = []
        self.sc_m = []
        self.u_offsets = [0]
        self.h_offsets = [0]
        mono_index: list[int] = []
        U_parts = []
        for parity in parities:
            outs = [ir for ir in out_irreps if ir[1] == parity]
            bases = {
                ir: [_coupling(self.a_irreps, ir, nu) for nu in range(1, correlation + 1)] for ir in outs
            }
            # monomials of each degree with a non-zero coefficient for some output of this parity
            used: list[list[tuple]] = []
            for nu in range(correlation):
                monos = bases[outs[0]][nu][0]
                nz = np.zeros(len(monos), dtype=bool)
                for ir in outs:
                    nz |= np.abs(bases[ir][nu][1]).max(axis=(0, 2), initial=0.0) > 1e-12
                used.append([monos[k] for k in np.flatnonzero(nz)])
            lists = [[m[0] for m in used[0]], [], [], []]
            if correlation >= 2:
                lists[1] = [pair_id[m] for m in used[1]]
            if correlation >= 3:
                lists[2] = [pair_id[m[:2]] for m in used[2]]
                lists[3] = [m[2] for m in used[2]]
            offsets = [len(mono_index)]
            for lst in lists:
                mono_index.extend(lst)
                offsets.append(len(mono_index))
            self.mono_offsets.append(offsets)
            K = sum(len(u) for u in used)
            for ir in outs:
                rows = []
                for nu in range(correlation):
                    monos, U = bases[ir][nu]
                    col = {m: k for k, m in enumerate(monos)}
                    sel = [col[m] for m in used[nu]]
                    start = sum(len(u) for u in used[:nu])
                    for h in range(U.shape[0]):
                        row = np.zeros((K, 2 * ir[0] + 1))
                        row[start : start + len(sel)] = U[h][sel]
                        rows.append(row)
                U_ir = np.stack(rows, 0) if rows else np.zeros((0, K, 2 * ir[0] + 1))
                U_parts.append(U_ir.reshape(-1))
                self.sc_h.append(len(rows))
                self.sc_m.append(2 * ir[0] + 1)
                self.u_offsets.append(self.u_offsets[-1] + U_ir.size)
                self.h_offsets.append(self.h_offsets[-1] + len(rows))
            self.group_irreps.append(outs)
            self.group_dims.append([2 * l + 1 for l, _ in outs])
            self.group_k.append(K)
        self.register_buffer("mono_index", torch.tensor(mono_index, dtype=torch.long), False)
        self.register_buffer("U_all", torch.from_numpy(np.concatenate(U_parts)), False)
        self.sc_weights = nn.Parameter(torch.randn(n_elements, self.h_offsets[-1], C))
        order = [ir for outs in self.group_irreps for ir in outs]  # outputs grouped by parity
        self.out_order = [order.index(ir) for ir in out_irreps]
        self.w_out = _stacked_weights(len(out_irreps), C, C)
        self.residual = residual
        # (output index, input index) of the residual connections
        self.skip = (
            [(k, in_irreps.index(ir)) for k, ir in enumerate(out_irreps) if ir in in_irreps]
            if residual
            else []
        )
        self.w_skip = _stacked_weights(len(self.skip), C, C * (n_elements if element_mix else 1))
        self.gate = gate
        self.scalar_index = out_irreps.index((0, 1))
        # (output index, is pseudoscalar) of the gated irreps
        self.gated = [(k, ir == (0, -1)) for k, ir in enumerate(out_irreps) if ir != (0, 1)]
        self.w_gate = _linear_weight(C, C * len(self.gated) if gate else 0)

    def convolution(
        self,
        h: list[torch.Tensor],
        G_in: torch.Tensor,
        hidden: torch.Tensor,
        nbr: torch.Tensor,
        onehot: torch.Tensor,
    ) -> list[torch.Tensor]:
        """A per block ``[n_atoms, 2L+1, C]`` (channels last).

        ``G_in`` ``[n_atoms, n_nb, sh_dim]`` spherical harmonics of the padded neighbour list,
        ``hidden`` ``[n_atoms * n_nb, h]`` last hidden layer of the radial MLP (zero for padding),
        ``nbr`` ``[n_atoms * n_nb]`` neighbour index, ``onehot`` ``[n_atoms, n_elements]``.  Per
        output block: Z (radial weight × neighbour feature, ``[n, n_nb·k, C]``) and G (CG ⊗ Y,
        ``[n, n_nb·k, 2L+1]``), then A = Gᵀ Z, one batched matmul over atoms.  Atoms go in chunks
        so that Z and the radial weights stay cache-sized (and no whole-system
        ``[n_edges, n_paths·C]`` tensor exists).
        """
        C = self.channels
        n, n_nb = G_in.shape[0], G_in.shape[1]
        w_up = self.w_up.unbind(0)
        ups: list[torch.Tensor] = []
        for i in range(len(h)):
            ups.append(torch.matmul(h[i], w_up[i]))
        up = torch.cat(ups, 1)  # [n, D, C]
        per_atom = max(1, n_nb * (self.n_paths + sum(self.block_k)) * C)
        chunk = max(1, min(n, self.chunk_elements // per_atom))
        # split, not slices: a slice's backward writes a zero tensor of the whole input per slice
        G_chunks = G_in.split(chunk)
        hid_chunks = hidden.split(chunk * n_nb)
        nbr_chunks = nbr.split(chunk * n_nb)
        blocks: list[list[torch.Tensor]] = [[] for _ in range(len(self.a_irreps))]
        for c in range(len(G_chunks)):
            G_c = G_chunks[c]
            m = G_c.shape[0]
            hj = up.index_select(0, nbr_chunks[c]).split(self.in_dims, 1)  # per irrep [m*nb, 2l+1, C]
            Rs = self.radial.out(hid_chunks[c]).view(m * n_nb, self.n_paths, C).split(1, 1)  # per path
            for b in range(len(self.a_irreps)):
                k = self.block_k[b]
                parts: list[torch.Tensor] = []
                for p, i in self.block_paths[b]:
                    parts.append(Rs[p] * hj[i])
                z = torch.cat(parts, 1).view(m, n_nb * k, C)
                cg = self.cg[:, self.cg_offsets[b] : self.cg_offsets[b + 1]]
                G = torch.matmul(G_c, cg).view(m, n_nb * k, 2 * self.a_irreps[b][0] + 1)
                blocks[b].append(torch.bmm(G.transpose(1, 2), z))  # [m, 2L+1, C]
        w_a = self.w_a.unbind(0)
        out: list[torch.Tensor] = []
        for b in range(len(blocks)):
            out.append(_mix(torch.cat(blocks[b], 0), w_a[b], onehot, self.mix_a))
        return out

    def symmetric_product(self, A: torch.Tensor, element: torch.Tensor) -> list[torch.Tensor]:
        """B for every output irrep ``[n_atoms, 2L+1, C]`` from A ``[n_atoms, a_dim, C]``.

        Works channel-major (``[C, atoms, monomials]``) so that the contraction with the element's
        ``T[c, monomial, M]`` is a batched matmul over channels without copies, one element at a
        time, in cache-sized chunks of atoms.
        """
        C = A.shape[2]
        Z = self.n_elements
        At = A.permute(2, 0, 1).contiguous()  # [C, n, a_dim]
        T_groups: list[list[torch.Tensor]] = []
        q = 0
        for g in range(len(self.group_irreps)):
            K = self.group_k[g]
            T: list[torch.Tensor] = []
            for _ in range(len(self.group_irreps[g])):
                U = self.U_all[self.u_offsets[q] : self.u_offsets[q + 1]].view(self.sc_h[q], K * self.sc_m[q])
                W = self.sc_weights[:, self.h_offsets[q] : self.h_offsets[q + 1]]  # [Z, H, C]
                T.append(torch.matmul(W.transpose(1, 2), U).view(Z, C, K, self.sc_m[q]))
                q += 1
            T_groups.append(torch.cat(T, 3).unbind(0))  # per element [C, K, M_group]
        n_pairs = self.pair_a.shape[0]
        chunk = max(1, self.chunk_elements // (C * (n_pairs + sum(self.group_k))))
        results: list[list[torch.Tensor]] = [[] for _ in range(len(self.group_irreps))]
        order: list[torch.Tensor] = []
        for e in range(Z):
            if Z == 1:
                A_e = At
            else:
                idx = torch.nonzero(element == e).squeeze(-1)
                if idx.numel() == 0:
                    continue
                order.append(idx)
                A_e = At.index_select(1, idx)
            for A_c in A_e.split(chunk, 1):
                pairs = A_c.index_select(2, self.pair_a) * A_c.index_select(2, self.pair_b)
                for g in range(len(self.group_irreps)):
                    o = self.mono_offsets[g]
                    monos = [A_c.index_select(2, self.mono_index[o[0] : o[1]])]
                    if self.correlation >= 2:
                        monos.append(pairs.index_select(2, self.mono_index[o[1] : o[2]]))
                    if self.correlation >= 3:
                        monos.append(
                            pairs.index_select(2, self.mono_index[o[2] : o[3]])
                            * A_c.index_select(2, self.mono_index[o[3] : o[4]])
                        )
                    mono = torch.cat(monos, 2)  # [C, m, K]
                    results[g].append(torch.bmm(mono, T_groups[g][e]))  # [C, m, M_group]
        out: list[torch.Tensor] = []
        for g in range(len(self.group_irreps)):
            res = torch.cat(results[g], 1)
            if len(order) > 0:
                res = res.index_select(1, torch.argsort(torch.cat(order)))
            out.extend(res.permute(1, 2, 0).split(self.group_dims[g], 1))  # [n, 2L+1, C]
        return [out[k] for k in self.out_order]

    def update(
        self, B: list[torch.Tensor], h: list[torch.Tensor], onehot: torch.Tensor
    ) -> list[torch.Tensor]:
        w_out = self.w_out.unbind(0)
        new: list[torch.Tensor] = []
        for k in range(len(B)):
            new.append(torch.matmul(B[k], w_out[k]))
        if self.residual:
            w_skip = self.w_skip.unbind(0)
            for s in range(len(self.skip)):
                k, i = self.skip[s]
                new[k] = new[k] + _mix(h[i], w_skip[s], onehot, self.element_mix)
        return new

    def apply_gate(self, h: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.gate:
            return h
        k0 = self.scalar_index
        s = h[k0][:, 0]  # [n, C]
        out = [x for x in h]
        if len(self.gated) > 0:
            gates = torch.sigmoid(s @ self.w_gate).view(s.shape[0], len(self.gated), self.channels)
            for q in range(len(self.gated)):
                k, pseudo = self.gated[q]
                out[k] = torch.tanh(h[k]) if pseudo else h[k] * gates[:, q, None, :]
        out[k0] = torch.nn.functional.silu(h[k0])
        return out


# attribute types for TorchScript of lists that may be empty (set as objects: this module's
# annotations are postponed strings, which TorchScript does not resolve)
_Interaction.__annotations__ = {"skip": List[Tuple[int, int]], "gated": List[Tuple[int, bool]]}  # noqa: UP006


class EquivariantPotential(nn.Module):
    """E(3)-equivariant MACE/NequIP-style potential -> atomic energies ``[n_atoms]`` (eV).

    ``channels`` features per irrep; hidden irreps l ≤ ``l_max`` (natural parity, or both with
    ``parity="both"``); spherical harmonics and A up to ``sh_l_max``; symmetric products up to
    ``correlation`` (ν; 1 gives two-body NequIP-style messages); ``num_layers`` interactions;
    ``element_mix``: per-element channel mixing of the first layer's A and later residuals (MACE's
    self-connection; off by default, so files written before the option load unchanged).
    """

    model_type = "equivariant"

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 5.0,
        channels: int = 128,
        l_max: int = 1,
        sh_l_max: int = 3,
        correlation: int = 3,
        num_layers: int = 2,
        n_radial: int = 8,
        envelope_p: int = 5,
        radial_hidden: Sequence[int] = (64, 64, 64),
        readout_hidden: int = 16,
        parity: str = "natural",
        gate: bool = True,
        element_mix: bool = False,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("channels", channels, 1),
            ("num_layers", num_layers, 1),
            ("correlation", correlation, 1),
            ("n_radial", n_radial, 1),
            ("readout_hidden", readout_hidden, 1),
            ("envelope_p", envelope_p, 2),
            ("l_max", l_max, 0),
            ("sh_l_max", sh_l_max, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"equivariant model: {name} = {value!r} must be an integer >= {low}")
        if correlation > 3:
            raise ValueError(f"equivariant model: correlation = {correlation} > 3 is not supported")
        if l_max > sh_l_max:
            raise ValueError(f"equivariant model: l_max = {l_max} must be <= sh_l_max = {sh_l_max}")
        if parity not in ("natural", "both"):
            raise ValueError(f"equivariant model: parity = {parity!r} must be 'natural' or 'both'")
        if not float(cutoff) > 0:
            raise ValueError(f"equivariant model: cutoff = {cutoff!r} must be positive")
        if not species:
            raise ValueError("equivariant model: species must not be empty")
        self.species = sorted(int(z) for z in species)
        self.cutoff = float(cutoff)
        self.channels, self.l_max, self.sh_l_max = channels, l_max, sh_l_max
        self.correlation, self.num_layers, self.n_radial = correlation, num_layers, n_radial
        self.envelope_p, self.readout_hidden, self.parity, self.gate = (
            envelope_p,
            readout_hidden,
            parity,
            gate,
        )
        self.element_mix = bool(element_mix)
        self.radial_hidden = [int(h) for h in radial_hidden]
        n_el = len(self.species)
        C = channels

        monos, P = _sh_polynomials(sh_l_max)
        self.register_buffer("sh_exponents", torch.tensor(monos, dtype=torch.long), persistent=False)
        self.register_buffer("sh_coefficients", torch.from_numpy(P), persistent=False)
        self.register_buffer(
            "bessel_n", torch.arange(1, n_radial + 1, dtype=torch.float64) * math.pi / self.cutoff
        )

        self.embedding = nn.Parameter(torch.randn(n_el, C))
        hidden = _irreps(l_max, parity)
        a_allowed = _irreps(sh_l_max, parity)
        self.layers = nn.ModuleList()
        irreps_in: list[Irrep] = [(0, 1)]
        for t in range(num_layers):
            last = t == num_layers - 1
            out = [(0, 1)] if last else hidden
            self.layers.append(
                _Interaction(
                    irreps_in, a_allowed, out, sh_l_max, C, n_el, correlation, n_radial,
                    self.radial_hidden, residual=t > 0, gate=gate and not last,
                    element_mix=self.element_mix,
                )
            )  # fmt: skip
            irreps_in = out
        self.readouts = _stacked_weights(num_layers - 1, C, 1)
        self.readout_mlp = _RadialMLP([C, readout_hidden, 1])
        self.register_buffer("avg_num_neighbours", torch.ones((), dtype=torch.float64))
        self.register_buffer("energy_shift", torch.zeros(n_el, dtype=torch.float64))  # eV
        self.register_buffer("energy_scale", torch.ones(n_el, dtype=torch.float64))  # eV
        z_to_index = torch.full((119,), -1, dtype=torch.int64)
        z_to_index[torch.tensor(self.species)] = torch.arange(n_el)
        self.register_buffer("z_to_index", z_to_index, persistent=False)
        self.to(torch.get_default_dtype())

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        return {
            "species": self.species,
            "cutoff": self.cutoff,
            "channels": self.channels,
            "l_max": self.l_max,
            "sh_l_max": self.sh_l_max,
            "correlation": self.correlation,
            "num_layers": self.num_layers,
            "n_radial": self.n_radial,
            "envelope_p": self.envelope_p,
            "radial_hidden": self.radial_hidden,
            "readout_hidden": self.readout_hidden,
            "parity": self.parity,
            "gate": self.gate,
            "element_mix": self.element_mix,
        }

    @classmethod
    def from_config(cls, config: dict) -> EquivariantPotential:
        return cls(**config)

    @classmethod
    def from_preset(cls, preset: str, species: Sequence[int], **overrides) -> EquivariantPotential:
        if preset not in PRESETS:
            raise ValueError(f"unknown equivariant preset {preset!r}; choose from {sorted(PRESETS)}")
        return cls(species, **{**PRESETS[preset], **overrides})

    # -------------------------------------------------------------- statistics
    def set_statistics(
        self,
        energy_shift: dict[int, float],
        energy_scale: float | dict[int, float],
        avg_num_neighbours: float,
    ) -> None:
        """Per-element shift/scale of atomic energies (eV) and the mean neighbour count N̄."""
        if not avg_num_neighbours > 0:
            raise ValueError(f"avg_num_neighbours = {avg_num_neighbours!r} must be positive")
        self.set_energy_shift(energy_shift)
        with torch.no_grad():
            if isinstance(energy_scale, dict):
                for z, s in energy_scale.items():
                    if int(z) in self.species:
                        self.energy_scale[self.species.index(int(z))] = float(s)
            else:
                self.energy_scale.fill_(float(energy_scale))
            self.avg_num_neighbours.fill_(float(avg_num_neighbours))

    @torch.no_grad()
    def set_energy_shift(self, energy_shift: dict[int, float]) -> None:
        """Per-element energies e_Z (eV, ``{Z: e}``): refitted when fine-tuning on another level."""
        for z, e in energy_shift.items():
            if int(z) in self.species:
                self.energy_shift[self.species.index(int(z))] = float(e)

    def fit_statistics(
        self, graphs: Sequence[dict], energy_shift: dict[int, float], energy_scale: float
    ) -> None:
        """Mean neighbour count of ``graphs`` plus the given energy shift and scale."""
        n_edges = sum(int(g[keys.EDGE_INDEX].shape[1]) for g in graphs)
        n_atoms = sum(int(g[keys.ATOMIC_NUMBERS].shape[0]) for g in graphs)
        self.set_statistics(energy_shift, energy_scale, max(n_edges / max(n_atoms, 1), 1.0))

    # ----------------------------------------------------------------- forward
    def _edges(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spherical harmonics ``[E, (l+1)²]`` and enveloped Bessel features ``[E, n_radial]``."""
        r = torch.linalg.vector_norm(vectors, dim=-1)  # [E]
        u = vectors / r[:, None]
        e = self.sh_exponents  # [n_mono, 3]
        powers = [u.new_ones(u.shape[0], 3), u]
        for _ in range(2, self.sh_l_max + 1):
            powers.append(powers[-1] * u)
        pw = torch.stack(powers, 2)  # [E, 3, l+1]: u_k^q
        mono = (
            pw[:, 0].index_select(1, e[:, 0])
            * pw[:, 1].index_select(1, e[:, 1])
            * pw[:, 2].index_select(1, e[:, 2])
        )
        Y = mono @ self.sh_coefficients
        x = r / self.cutoff
        p = self.envelope_p
        env = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
        env = torch.where(x < 1, env, torch.zeros_like(env))
        bessel = math.sqrt(2.0 / self.cutoff) * torch.sin(r[:, None] * self.bessel_n) / r[:, None]
        return Y, bessel * env[:, None]

    @staticmethod
    def neighbour_layout(centres: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, int]:
        """Index ``[n_atoms * n_nb]`` of each atom's edges, padded with ``n_edges`` (a dummy row)."""
        E = centres.shape[0]
        counts = torch.bincount(centres, minlength=n_atoms)
        n_nb = 0
        if E > 0:
            n_nb = int(counts.max())
        order = torch.argsort(centres, stable=True)
        start = torch.cumsum(counts, 0) - counts
        sorted_c = centres[order]
        slot = torch.arange(E, device=centres.device) - start[sorted_c]
        pad = torch.full((n_atoms * n_nb,), E, dtype=torch.long, device=centres.device)
        pad[sorted_c * n_nb + slot] = order
        return pad, n_nb

    @torch.jit.unused
    def _checked_elements(self, numbers: torch.Tensor) -> torch.Tensor:
        return element_indices(self.z_to_index, numbers, self.species)

    def elements(self, numbers: torch.Tensor) -> torch.Tensor:
        """Element slot of each atom; unknown elements raise."""
        if torch.jit.is_scripting():
            index = self.z_to_index[numbers]
            if bool((index < 0).any()):
                raise RuntimeError("the structure contains an element the model was not trained on")
            return index
        return self._checked_elements(numbers)

    def run(self, graph: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """Atomic energies ``[n]`` and, per layer, the A blocks then the h irreps ``[n, 2l+1, C]``."""
        element = self.elements(graph[keys.ATOMIC_NUMBERS])
        vectors = graph[keys.EDGE_VECTORS]
        edge_index = graph[keys.EDGE_INDEX]
        n = element.shape[0]
        # padded neighbour lists: the dummy edge lies beyond the cutoff, so its radial weights are 0
        pad, n_nb = self.neighbour_layout(edge_index[0], n)
        dummy = vectors.new_zeros(1, 3)
        dummy[0, 0] = 2.0 * self.cutoff
        Y, radial = self._edges(torch.cat([vectors, dummy]).index_select(0, pad))
        G_in = Y.view(n, n_nb, Y.shape[1])
        nbr = torch.cat([edge_index[1], edge_index[1].new_zeros(1)]).index_select(0, pad)
        onehot = torch.nn.functional.one_hot(element, len(self.species)).to(vectors.dtype)
        h = [self.embedding.index_select(0, element)[:, None, :]]  # [n, 1, C] 0e
        feats: list[list[torch.Tensor]] = []
        energy = Y.new_zeros(n)
        inv_nb = 1.0 / self.avg_num_neighbours
        for t, layer in enumerate(self.layers):
            A = [a * inv_nb for a in layer.convolution(h, G_in, layer.radial.hidden(radial), nbr, onehot)]
            B = layer.symmetric_product(torch.cat(A, 1), element)
            h_new = layer.update(B, h, onehot)
            scalars = h_new[layer.scalar_index][:, 0]
            if t < self.num_layers - 1:
                energy = energy + (scalars @ self.readouts[t]).squeeze(-1)
            else:
                energy = energy + self.readout_mlp(scalars).squeeze(-1)
            feats.append(A + h_new)
            h = layer.apply_gate(h_new)
        return energy * self.energy_scale[element] + self.energy_shift[element], feats

    @torch.jit.unused
    def intermediates(self, graph: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Per layer: ``{"A <irrep>": [n, 2l+1, C], "h <irrep>": ...}`` and last ``{"energy": [n]}``."""
        energy, feats = self.run(graph)
        out = []
        for layer, tensors in zip(self.layers, feats):
            names = [f"A {irrep_name(ir)}" for ir in layer.a_irreps]
            names += [f"h {irrep_name(ir)}" for ir in layer.out_irreps]
            out.append(dict(zip(names, tensors)))
        out.append({"energy": energy})
        return out

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.run(graph)[0]


_SPEC_KEYS = {
    "preset": str,
    "channels": int,
    "l_max": int,
    "sh_l_max": int,
    "correlation": int,
    "num_layers": int,
    "n_radial": int,
    "envelope_p": int,
    "radial_hidden": list,
    "readout_hidden": int,
    "parity": str,
    "gate": bool,
    "element_mix": bool,
}


def equivariant_arguments(spec: dict | None) -> dict:
    """Constructor arguments from a config's ``model.equivariant`` mapping (``preset`` plus overrides).

    Raises ``ValueError`` naming the bad key; the preset defaults to ``medium``.
    """
    spec = dict(spec or {})
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; allowed: {sorted(_SPEC_KEYS)}")
    for key, value in spec.items():
        kind = _SPEC_KEYS[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise ValueError(f"{key} = {value!r}: expected {kind.__name__}")
    preset = spec.pop("preset", "medium")
    if preset not in PRESETS:
        raise ValueError(f"preset = {preset!r}: choose from {sorted(PRESETS)}")
    hidden = spec.get("radial_hidden")
    if hidden is not None and not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
    ):
        raise ValueError(f"radial_hidden = {hidden!r}: must be a list of positive ints")
    return {**PRESETS[preset], **spec}


def build_equivariant(spec: dict | None, species: Sequence[int], cutoff: float) -> EquivariantPotential:
    """The model of a config's ``model`` section with ``type: equivariant``."""
    return EquivariantPotential(species, cutoff=cutoff, **equivariant_arguments(spec))
