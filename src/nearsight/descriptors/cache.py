"""Descriptors of fixed training geometries computed once, with their derivatives.

During training the positions of a frame never change, so the descriptors G_i of its atoms and
their derivatives with respect to the edge vectors, J_e = ∂G_i/∂r_e for every edge e = (i, j)
(a centre's descriptors depend only on its own edges), are the same at every epoch.  This is what
n2p2 and aenet store for Behler-Parrinello training.  :func:`attach_descriptor_cache` stores them
in each graph (``keys`` ``descriptors`` ``[n_atoms, n_features]`` and ``descriptor_jacobian``
``[n_edges, 3, n_features]``); a model that finds them uses :func:`cached_features`,

    G_i(r) ≈ G_i(r⁰) + Σ_{e ∋ i} J_e · (r_e − r_e⁰),   evaluated at r = r⁰,

which has the stored value and exactly the stored first derivatives with respect to positions and
strain, so energies, forces, stress and the gradients of a force loss with respect to the weights
are those of the full descriptor, without recomputing it or its double backward at every step.
Only first derivatives are exact (the linearisation has no curvature): training on forces and
stress needs no more; nothing else should use a cached graph.

Memory: n_edges × 3 × n_features numbers (:func:`cache_size_bytes`).  ``training.cache_descriptors:
true`` stores them for the training and validation frames (the trainer refuses a cache larger than
80 % of the available memory); computing them costs about as much as 40 ordinary steps of each frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import keys

DESCRIPTORS = keys.declare("descriptors", "atom", ("n_features",), "descriptor")
DESCRIPTOR_JACOBIAN = keys.declare("descriptor_jacobian", "edge", (3, "n_features"), "descriptor/Å")
_FEATURE_CHUNK = 8  # features per batched backward pass (8-16 fastest for SOAP on one thread)


def cache_size_bytes(graphs: Sequence[dict], n_features: int, dtype: torch.dtype) -> int:
    """Bytes the cache of ``graphs`` takes (descriptors and their Jacobians)."""
    n_edges = sum(int(g[keys.EDGE_INDEX].shape[1]) for g in graphs)
    n_atoms = sum(int(g[keys.POSITIONS].shape[0]) for g in graphs)
    item = torch.empty((), dtype=dtype).element_size()
    return (n_edges * 3 + n_atoms) * n_features * item


def descriptor_with_jacobian(descriptor: torch.nn.Module, graph: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G [n_atoms, F], J [n_edges, 3, F])`` of one graph, J_e = ∂G_{i(e)}/∂r_e.

    Each block of features costs one batched backward pass (``is_grads_batched``): the gradient of
    Σ_i G_{i,f} with respect to r_e is ∂G_{i(e),f}/∂r_e because no other centre depends on r_e."""
    from ..models.forcefield import edge_vectors  # models import the descriptors

    with torch.enable_grad():
        vectors = edge_vectors(
            graph[keys.POSITIONS], graph[keys.CELL], graph[keys.BATCH], graph[keys.EDGE_INDEX],
            graph[keys.CELL_SHIFTS],
        ).detach().requires_grad_(True)  # fmt: skip
        graph = dict(graph, **{keys.EDGE_VECTORS: vectors})
        # separate autograd branches (SOAP's power spectrum and bispectrum): each block's backward
        # passes only through its own branch
        blocks = (
            descriptor.feature_blocks(graph) if hasattr(descriptor, "feature_blocks") else [descriptor(graph)]
        )
        values = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)  # [n_atoms, F]
        jacobian = values.new_zeros((vectors.shape[0], 3, values.shape[1]))
        if vectors.shape[0] == 0:
            return values.detach(), jacobian
        offset = 0
        for block in blocks:
            n_block = block.shape[1]
            for start in range(0, n_block, _FEATURE_CHUNK):
                chunk = range(start, min(start + _FEATURE_CHUNK, n_block))
                seeds = block.new_zeros((len(chunk), *block.shape))  # [b, n_atoms, F_block]
                for k, f in enumerate(chunk):
                    seeds[k, :, f] = 1.0
                (grads,) = torch.autograd.grad(
                    block, vectors, seeds, retain_graph=True, is_grads_batched=True, allow_unused=True
                )  # [b, n_edges, 3]
                if grads is not None:
                    jacobian[:, :, offset + start : offset + chunk.stop] = grads.permute(1, 2, 0)
            offset += n_block
    return values.detach(), jacobian


@torch.no_grad()
def attach_descriptor_cache(descriptor: torch.nn.Module, graphs: Sequence[dict]) -> None:
    """Store each graph's descriptors and their Jacobian in it (in place)."""
    for graph in graphs:
        values, jacobian = descriptor_with_jacobian(descriptor, graph)
        dtype = graph[keys.POSITIONS].dtype
        graph[DESCRIPTORS] = values.to(dtype)
        graph[DESCRIPTOR_JACOBIAN] = jacobian.to(dtype)


def detach_descriptor_cache(graphs: Sequence[dict]) -> None:
    """Remove the cache from graphs (in place)."""
    for graph in graphs:
        graph.pop(DESCRIPTORS, None)
        graph.pop(DESCRIPTOR_JACOBIAN, None)


def has_cache(graph: dict) -> bool:
    return DESCRIPTORS in graph and DESCRIPTOR_JACOBIAN in graph


class _Linearised(torch.autograd.Function):
    """G(r) with value G⁰ and ∂G_{i(e)}/∂r_e = J_e: no work forward, one pass over J backward."""

    @staticmethod
    def forward(ctx, vectors, stored, jacobian, centres):  # noqa: ANN001 - autograd.Function signature
        ctx.save_for_backward(jacobian, centres)
        return stored.clone()

    @staticmethod
    def backward(ctx, grad_features):  # noqa: ANN001
        jacobian, centres = ctx.saved_tensors
        return _Contract.apply(grad_features, jacobian, centres), None, None, None


class _Contract(torch.autograd.Function):
    """∂E/∂r_e = J_e ∂E/∂G_{i(e)} ``[n_edges, 3]``, linear in ∂E/∂G, whose own backward (what a force
    or stress loss needs to reach the weights) is a second pass over J."""

    @staticmethod
    def forward(ctx, grad_features, jacobian, centres):  # noqa: ANN001
        ctx.save_for_backward(jacobian, centres)
        ctx.n_atoms = grad_features.shape[0]
        gathered = grad_features.index_select(0, centres)  # [n_edges, F]
        return torch.linalg.vecdot(jacobian, gathered[:, None, :])  # [n_edges, 3]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_vectors):  # noqa: ANN001
        jacobian, centres = ctx.saved_tensors
        per_edge = torch.bmm(grad_vectors[:, None, :], jacobian).squeeze(1)  # [n_edges, F]
        out = per_edge.new_zeros((ctx.n_atoms, per_edge.shape[1])).index_add_(0, centres, per_edge)
        return out, None, None


def cached_features(graph: dict) -> torch.Tensor:
    """``[n_atoms, F]``: the stored descriptors, with the stored first derivatives with respect to
    the edge vectors (exact at the stored geometry; no curvature)."""
    vectors = graph.get(keys.EDGE_VECTORS)
    stored = graph[DESCRIPTORS]
    if vectors is None or not (torch.is_grad_enabled() and vectors.requires_grad):
        return stored
    return _Linearised.apply(vectors, stored, graph[DESCRIPTOR_JACOBIAN], graph[keys.EDGE_INDEX][0])
