"""The symmetric product of a message-passing layer (:mod:`nearsight.models.interaction`): B, the
products of A up to degree ``correlation`` contracted with element-dependent weights onto each
output irrep, as MACE's higher-body-order messages; eager (per element, in chunks) and traced
(shape-static, its monomial factors as one matmul) forms.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from ..nn import ExactConstants
from .irreps import Irrep, irreps_dim, symmetric_coupling


class SymmetricProduct(ExactConstants):
    """The symmetric product's coefficients and evaluation; :class:`Interaction` builds them with
    :meth:`build_symmetric_product` (after ``a_irreps`` and ``chunk_elements`` are set)."""

    def build_symmetric_product(
        self, out_irreps: list[Irrep], correlation: int, C: int, n_elements: int
    ) -> None:
        # products of A (per channel) up to degree `correlation`
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
