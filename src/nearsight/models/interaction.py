"""One message-passing layer of the equivariant potential (:mod:`nearsight.models.equivariant`):
equivariant convolution, symmetric product, update and gate, with the weights it is built from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import List, Tuple  # noqa: UP035 - TorchScript attribute annotations

import numpy as np
import torch
from torch import nn

from .irreps import Irrep, wigner_3j
from .symmetric_product import SymmetricProduct

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


class Interaction(SymmetricProduct):
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

        self.build_symmetric_product(out_irreps, correlation, C, n_elements)
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
