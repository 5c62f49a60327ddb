"""One message-passing layer of the equivariant potential (:mod:`nearsight.models.equivariant`):
equivariant convolution, symmetric product, update and gate, with the weights it is built from.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import List, Tuple  # noqa: UP035 - TorchScript attribute annotations

import numpy as np
import torch
from torch import nn

from ..nn import ExactConstants
from .irreps import Irrep, irreps_dim, symmetric_coupling, wigner_3j

_CHUNK_ELEMENTS = 1 << 21  # per-chunk size of per-edge / per-monomial tensors (8 MiB in float32): fits L2/L3
_SILU_NORM = 1.679  # 1 / sqrt(E[silu(x)²]) for x ~ N(0, 1): keeps the second moment through layers


def linear_weight(c_in: int, c_out: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(c_in, c_out) / math.sqrt(c_in))


def stacked_weights(n: int, c_in: int, c_out: int) -> nn.Parameter:
    """``n`` channel-mixing matrices ``[n, c_in, c_out]`` (one per irrep)."""
    return nn.Parameter(torch.randn(n, c_in, c_out) / math.sqrt(c_in))


class RadialMLP(nn.Module):
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


def mix(x: torch.Tensor, w: torch.Tensor, onehot: torch.Tensor, per_element: bool) -> torch.Tensor:
    """Channel mixing ``x [n, d, C] @ w``; with ``per_element``, ``w [C, Z·C']`` holds one matrix per
    element and each atom takes its own (``onehot [n, Z]``): x W_{z(i)}."""
    y = torch.matmul(x, w)
    Z = onehot.shape[1]
    if not per_element or Z == 1:
        return y
    y = y.view(x.shape[0], x.shape[1], Z, w.shape[1] // Z)
    return (y * onehot[:, None, :, None]).sum(2)


class Interaction(ExactConstants):
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
        self.w_up = stacked_weights(len(in_irreps), C, C)

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
                w = wigner_3j(l1, l2, l3) * math.sqrt(2 * l3 + 1)  # [m1, m2, M]
                for m1 in range(2 * l1 + 1):
                    block = np.zeros((self.sh_dim, 2 * l3 + 1))
                    block[l2 * l2 : (l2 + 1) ** 2] = w[m1]
                    cg.append(block)
            # [sh_dim, k * (2l3+1)]: per-edge G = Y @ cg, k = (path, m1) pairs in path order
            cgs.append(np.stack(cg, 0).transpose(1, 0, 2).reshape(self.sh_dim, -1))
            self.cg_offsets.append(self.cg_offsets[-1] + cgs[-1].shape[1])
            self.block_k.append(len(cg))
            self.block_paths.append(segments)
        self.register_constant("cg", torch.from_numpy(np.concatenate(cgs, 1)))
        self.radial = RadialMLP([n_radial, *radial_hidden, self.n_paths * C])
        # element-dependent channel mixing (MACE's self-connection with the node attributes): of A
        # in the first layer (no residual), of the residual in later layers
        self.element_mix = element_mix
        self.mix_a = element_mix and not residual
        self.w_a = stacked_weights(len(self.a_irreps), C, C * (n_elements if self.mix_a else 1))

        # ---- symmetric product of A (per channel) up to degree `correlation`
        a_dim = irreps_dim(self.a_irreps)
        pairs = list(itertools.combinations_with_replacement(range(a_dim), 2))
        pair_id = {m: k for k, m in enumerate(pairs)}
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
                ir: [symmetric_coupling(self.a_irreps, ir, nu) for nu in range(1, correlation + 1)]
                for ir in outs
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
        # keep only the pair products some monomial uses (a last layer, with scalar outputs only,
        # uses 72 of 136 at sh_l_max 3), their indices renumbered
        pair_rows = [
            k for g in range(len(parities)) for k in range(self.mono_offsets[g][1], self.mono_offsets[g][3])
        ]
        used_pairs = sorted({mono_index[k] for k in pair_rows})
        renumber = {p: k for k, p in enumerate(used_pairs)}
        for k in pair_rows:
            mono_index[k] = renumber[mono_index[k]]
        self.register_buffer(
            "pair_a", torch.tensor([pairs[p][0] for p in used_pairs], dtype=torch.long), False
        )
        self.register_buffer(
            "pair_b", torch.tensor([pairs[p][1] for p in used_pairs], dtype=torch.long), False
        )
        self.register_buffer("mono_index", torch.tensor(mono_index, dtype=torch.long), False)
        # the traced symmetric product takes every factor of every monomial in one matmul with a 0/1
        # matrix (compiled, a gather with repeated indices has a scatter-add backward pass, slow on
        # CPU; a matmul's backward is a matmul): per group, the columns [degree 1 | degree 2 first
        # factors | second factors | degree 3 first | second | third]
        first = [pairs[p][0] for p in used_pairs]
        second = [pairs[p][1] for p in used_pairs]
        columns: list[int] = []
        self.factor_offsets = [0]
        for o in self.mono_offsets:
            deg2, deg3 = mono_index[o[1] : o[2]], mono_index[o[2] : o[3]]
            columns += mono_index[o[0] : o[1]] + [first[q] for q in deg2] + [second[q] for q in deg2]
            columns += [first[q] for q in deg3] + [second[q] for q in deg3] + mono_index[o[3] : o[4]]
            self.factor_offsets.append(len(columns))
        select = np.zeros((a_dim, len(columns)))
        select[columns, np.arange(len(columns))] = 1.0
        self.register_constant("factor_select", torch.from_numpy(select))
        self.register_constant("U_all", torch.from_numpy(np.concatenate(U_parts)))
        self.sc_weights = nn.Parameter(torch.randn(n_elements, self.h_offsets[-1], C))
        order = [ir for outs in self.group_irreps for ir in outs]  # outputs grouped by parity
        self.out_order = [order.index(ir) for ir in out_irreps]
        self.w_out = stacked_weights(len(out_irreps), C, C)
        self.residual = residual
        # (output index, input index) of the residual connections
        self.skip = (
            [(k, in_irreps.index(ir)) for k, ir in enumerate(out_irreps) if ir in in_irreps]
            if residual
            else []
        )
        self.w_skip = stacked_weights(len(self.skip), C, C * (n_elements if element_mix else 1))
        self.gate = gate
        self.scalar_index = out_irreps.index((0, 1))
        # (output index, is pseudoscalar) of the gated irreps
        self.gated = [(k, ir == (0, -1)) for k, ir in enumerate(out_irreps) if ir != (0, 1)]
        self.w_gate = linear_weight(C, C * len(self.gated) if gate else 0)

    def convolution(
        self,
        h: list[torch.Tensor],
        G_in: torch.Tensor,
        hidden: torch.Tensor,
        nbr: torch.Tensor,
        onehot: torch.Tensor,
        chunked: bool = True,
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
        up = self.up_features(h)  # [n, D, C]
        if chunked:
            per_atom = max(1, n_nb * (self.n_paths + sum(self.block_k)) * C)
            chunk = max(1, min(n, self.chunk_elements // per_atom))
            # split, not slices: a slice's backward writes a zero tensor of the whole input per slice
            G_chunks = G_in.split(chunk)
            hid_chunks = hidden.split(chunk * n_nb)
            nbr_chunks = nbr.split(chunk * n_nb)
        else:  # traced for export: one piece (the number of chunks would depend on the sizes)
            G_chunks, hid_chunks, nbr_chunks = [G_in], [hidden], [nbr]
        blocks: list[list[torch.Tensor]] = [[] for _ in range(len(self.a_irreps))]
        for c in range(len(G_chunks)):
            hj = up.index_select(0, nbr_chunks[c]).split(self.in_dims, 1)  # per irrep [m*nb, 2l+1, C]
            parts = self.conv_blocks(G_chunks[c], self.radial.out(hid_chunks[c]), hj)
            for b in range(len(parts)):
                blocks[b].append(parts[b])
        w_a = self.w_a.unbind(0)
        out: list[torch.Tensor] = []
        for b in range(len(blocks)):
            out.append(mix(torch.cat(blocks[b], 0), w_a[b], onehot, self.mix_a))
        return out

    def up_features(self, h: list[torch.Tensor]) -> torch.Tensor:
        """The features neighbours send, ``[n_atoms, D, C]`` (every input irrep's channels mixed)."""
        w_up = self.w_up.unbind(0)
        ups: list[torch.Tensor] = []
        for i in range(len(h)):
            ups.append(torch.matmul(h[i], w_up[i]))
        return torch.cat(ups, 1)

    def conv_blocks(self, G_c: torch.Tensor, R: torch.Tensor, hj: list[torch.Tensor]) -> list[torch.Tensor]:
        """A per output block ``[m, 2L+1, C]`` of m atoms before the channel mixing: ``G_c [m, n_nb,
        sh_dim]`` their padded neighbours' harmonics, ``R [m·n_nb, n_paths·C]`` radial weights,
        ``hj`` per input irrep the neighbours' features ``[m·n_nb, 2l+1, C]``."""
        C = self.channels
        m, n_nb = G_c.shape[0], G_c.shape[1]
        Rs = R.view(m * n_nb, self.n_paths, C).split(1, 1)  # per path
        out: list[torch.Tensor] = []
        for b in range(len(self.a_irreps)):
            k = self.block_k[b]
            parts: list[torch.Tensor] = []
            for p, i in self.block_paths[b]:
                parts.append(Rs[p] * hj[i])
            z = torch.cat(parts, 1).view(m, n_nb * k, C)
            cg = self.cg[:, self.cg_offsets[b] : self.cg_offsets[b + 1]]
            G = torch.matmul(G_c, cg).view(m, n_nb * k, 2 * self.a_irreps[b][0] + 1)
            out.append(torch.bmm(G.transpose(1, 2), z))  # [m, 2L+1, C]
        return out

    def chunk_step(
        self,
        G_c: torch.Tensor,
        radial_c: torch.Tensor,
        hj: torch.Tensor,
        onehot: torch.Tensor,
        h: list[torch.Tensor],
        inv_nb: torch.Tensor,
    ) -> list[torch.Tensor]:
        """The whole layer on m atoms, shape-static (:mod:`nearsight.models.chunked`): ``G_c [m, n_nb,
        sh_dim]``, ``radial_c [m·n_nb, n_radial]`` their neighbours' harmonics and radial features,
        ``hj [m·n_nb, D, C]`` the neighbours' :meth:`up_features`, ``onehot [m, Z]``, ``h`` the atoms'
        own features.  Returns the 0e channels of the update ``[m, C]`` (for the readout), then the
        gated features per output irrep."""
        parts = self.conv_blocks(G_c, self.radial(radial_c), hj.split(self.in_dims, 1))
        w_a = self.w_a.unbind(0)
        A = [mix(parts[b], w_a[b], onehot, self.mix_a) * inv_nb for b in range(len(parts))]
        h_new = self.update(self.traced_symmetric_product(torch.cat(A, 1), onehot), h, onehot)
        scalars = h_new[self.scalar_index][:, 0].clone()  # (not a view of an output: map forbids it)
        return [scalars, *self.apply_gate(h_new)]

    def element_tensors(self, C: int) -> list[torch.Tensor]:
        """Per parity group, the element weights contracted with the coupling tensors once per call:
        ``T [Z, C, K, M_group]`` (K distinct monomials, M_group the group's output components)."""
        Z = self.n_elements
        T_groups: list[torch.Tensor] = []
        q = 0
        for g in range(len(self.group_irreps)):
            K = self.group_k[g]
            T: list[torch.Tensor] = []
            for _ in range(len(self.group_irreps[g])):
                U = self.U_all[self.u_offsets[q] : self.u_offsets[q + 1]].view(self.sc_h[q], K * self.sc_m[q])
                W = self.sc_weights[:, self.h_offsets[q] : self.h_offsets[q + 1]]  # [Z, H, C]
                T.append(torch.matmul(W.transpose(1, 2), U).view(Z, C, K, self.sc_m[q]))
                q += 1
            T_groups.append(torch.cat(T, 3))
        return T_groups

    def monomials(self, A_c: torch.Tensor, pairs: torch.Tensor, g: int) -> torch.Tensor:
        """The distinct monomials of group ``g`` ``[C, m, K]`` from A ``[C, m, a_dim]`` and its pair
        products ``[C, m, n_pairs]``."""
        o = self.mono_offsets[g]
        monos = [A_c.index_select(2, self.mono_index[o[0] : o[1]])]
        if self.correlation >= 2:
            monos.append(pairs.index_select(2, self.mono_index[o[1] : o[2]]))
        if self.correlation >= 3:
            monos.append(
                pairs.index_select(2, self.mono_index[o[2] : o[3]])
                * A_c.index_select(2, self.mono_index[o[3] : o[4]])
            )
        return torch.cat(monos, 2)

    def traced_monomials(self, factors: torch.Tensor, g: int) -> torch.Tensor:
        """:meth:`monomials` of group ``g`` ``[C, m, K]`` from the factor columns ``A @ factor_select``."""
        o = self.mono_offsets[g]
        k1, k2, k3 = o[1] - o[0], o[2] - o[1], o[3] - o[2]
        f = factors[:, :, self.factor_offsets[g] : self.factor_offsets[g + 1]].split(
            [k1, k2, k2, k3, k3, k3], 2
        )
        monos = [f[0]]
        if k2 > 0:
            monos.append(f[1] * f[2])
        if k3 > 0:
            monos.append(f[3] * f[4] * f[5])
        return torch.cat(monos, 2)

    def traced_symmetric_product(self, A: torch.Tensor, onehot: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`symmetric_product` without per-element index sets or chunks (what ``torch.export``
        traces): every atom's monomials against all elements' ``T``, each atom keeping its own."""
        C, n, Z = A.shape[2], A.shape[0], self.n_elements
        factors = torch.matmul(A.permute(2, 0, 1), self.factor_select)  # [C, n, columns]
        out: list[torch.Tensor] = []
        T_groups = self.element_tensors(C)
        for g in range(len(self.group_irreps)):
            K, M = self.group_k[g], sum(self.group_dims[g])
            T_all = T_groups[g].permute(1, 2, 0, 3).reshape(C, K, Z * M)  # [C, K, Z·M]
            res = torch.bmm(self.traced_monomials(factors, g), T_all).view(C, n, Z, M)
            res = (res * onehot[None, :, :, None]).sum(2)  # [C, n, M]: each atom's own element
            out.extend(res.permute(1, 2, 0).split(self.group_dims[g], 1))  # [n, 2L+1, C]
        return [out[k] for k in self.out_order]

    def symmetric_product(self, A: torch.Tensor, element: torch.Tensor) -> list[torch.Tensor]:
        """B for every output irrep ``[n_atoms, 2L+1, C]`` from A ``[n_atoms, a_dim, C]``.

        Works channel-major (``[C, atoms, monomials]``) so that the contraction with the element's
        ``T[c, monomial, M]`` is a batched matmul over channels without copies, one element at a
        time, in cache-sized chunks of atoms.
        """
        C = A.shape[2]
        Z = self.n_elements
        At = A.permute(2, 0, 1).contiguous()  # [C, n, a_dim]
        T_groups = [T.unbind(0) for T in self.element_tensors(C)]  # per group, per element [C, K, M_group]
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
                    mono = self.monomials(A_c, pairs, g)  # [C, m, K]
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
                new[k] = new[k] + mix(h[i], w_skip[s], onehot, self.element_mix)
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
Interaction.__annotations__ = {"skip": List[Tuple[int, int]], "gated": List[Tuple[int, bool]]}  # noqa: UP006
