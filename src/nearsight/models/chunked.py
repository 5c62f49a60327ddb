"""The layers of a traced (exported) equivariant model in chunks of a fixed number of atoms.

Eager calls split each layer's atoms into cache-sized chunks (:meth:`Interaction.convolution`), so
that the per-edge tensors of the convolution (neighbour features times radial weights, ``[m·n_nb·k,
C]``) stay in cache. A traced model cannot: the number of chunks depends on the atom count, which
``torch.export`` keeps symbolic, and a Python loop over it would have to be unrolled. Run as one
piece, a layer on a few thousand atoms streams those tensors through memory several times: the
compiled package ran at 0.56× the eager model on 1536 silicon atoms, 1.10× in chunks of 41
(``benchmarks/RESULTS.md``, compiled packages).

Here the layer's atoms are padded to k·S rows (S atoms per chunk, fixed when the model is traced;
k, the number of chunks, is the length of an input, ``keys.LAYER_CHUNKS``, so it is a size of its
own and never a function of another size that export would have to prove things about), and the
whole layer — radial MLP, convolution, symmetric product, update and gate — runs on one chunk at a
time inside ``map`` (torch's higher-order operator ``map_impl``, which ``make_fx`` traces and
AOTInductor compiles into a while loop; the loop body reads no tensor from outside: the layer's
weights and the symbolic neighbour width go in as arguments).
The backward pass, traced into the package for the forces, is a loop over the same chunks that
recomputes each chunk's forward (activation checkpointing), so the whole-system memory is that of
the gathered inputs and outputs, not of the per-edge intermediates.

Padding rows point at a dummy atom (index n, no element, no edges but the dummy edge beyond the
cutoff), whose outputs are dropped.
"""

from __future__ import annotations

import torch
from torch import nn

# the largest per-chunk tensors (the convolution's [S·n_nb·(paths + k), C], the symmetric product's
# factors [C, S, columns]) aim at this many elements: 6 MB in float32, the size at which 1536 silicon
# atoms ran fastest (S 32–48 against 136 at 4× the size: 0.39 against 0.50 s)
_CHUNK_ELEMENTS = 3 << 19


def chunk_atoms(model: nn.Module) -> int:
    """S, the atoms per chunk of a traced ``model``, from its typical neighbour count and widths (a
    constant of the model: the package records it, and the caller gives ``ceil(m / S)`` chunks)."""
    from ..nn import buffer_value

    if getattr(model, "export_chunk_atoms", None):  # set for one export (export_package's chunk_atoms)
        return int(model.export_chunk_atoms)
    neighbours = buffer_value(lambda: float(model.avg_num_neighbours))
    per_atom = 1.0
    for layer in model.layers:
        convolution = neighbours * (layer.n_paths + sum(layer.block_k)) * layer.channels
        product = layer.factor_select.shape[1] * layer.channels  # the symmetric product's factors
        per_atom = max(per_atom, convolution, product)
    return int(min(256, max(8, _CHUNK_ELEMENTS // per_atom)))


def layer_chunks(n_centres: int, atoms_per_chunk: int) -> int:
    """The number of chunks a layer of ``n_centres`` atoms takes: ``ceil(n / S)``, at least 2 (a size
    of 1 would be specialised by the tracer)."""
    return max(2, -(-n_centres // atoms_per_chunk))


class _ChunkStep(nn.Module):
    """``layer.chunk_step`` as a module call, so that ``torch.func.functional_call`` can hand it the
    layer's tensors as arguments (the body of ``map`` may not read tensors from outside)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, G, radial, hj, onehot, inv_nb, *h):
        return tuple(self.layer.chunk_step(G, radial, hj, onehot, list(h), inv_nb))


def chunked_layer(
    layer: nn.Module,
    h: list[torch.Tensor],
    Y: torch.Tensor,
    radial: torch.Tensor,
    slots: torch.Tensor,
    neighbour: torch.Tensor,
    onehot: torch.Tensor,
    centres: torch.Tensor,
    chunks: torch.Tensor,
    atoms_per_chunk: int,
    inv_nb: torch.Tensor,
) -> list[torch.Tensor]:
    """Layer ``layer`` on the atoms ``centres`` [m]: their update's 0e channels ``[m, C]``, then their
    gated features per output irrep ``[m, 2l+1, C]``.

    ``h`` the features of all n atoms (per input irrep ``[n, 2l+1, C]``), ``Y [E + 1, sh_dim]`` and
    ``radial [E + 1, n_radial]`` per edge with the dummy edge E last, ``slots [n, n_nb]`` each atom's
    edge rows (padded with E), ``neighbour [E + 1]``, ``onehot [n, Z]``, ``chunks [k]`` (only its
    length counts: k·S ≥ m).
    """
    from torch._higher_order_ops.map import map_impl

    n, n_nb = slots.shape[0], slots.shape[1]
    m, k, S = centres.shape[0], chunks.shape[0], atoms_per_chunk
    # the centres padded to k·S with the dummy atom n (gathers, not slices or cat of a computed
    # size: export would have to prove k·S ≥ m, which only the caller knows)
    pad_index = torch.arange(k * S, device=centres.device).clamp(max=m)
    rows_of = torch.cat([centres, centres.new_full((1,), n)]).index_select(0, pad_index)  # [k·S]
    dummy_slots = slots.new_full((1, n_nb), Y.shape[0] - 1)
    rows = torch.cat([slots, dummy_slots]).index_select(0, rows_of).reshape(-1)  # [k·S·n_nb]
    G = Y.index_select(0, rows).view(k, S, n_nb, Y.shape[1])
    rad = radial.index_select(0, rows).view(k, S * n_nb, radial.shape[1])
    up = layer.up_features(h)  # [n, D, C]
    hj = up.index_select(0, neighbour.index_select(0, rows)).view(k, S * n_nb, up.shape[1], up.shape[2])

    def padded(x: torch.Tensor) -> torch.Tensor:  # [n, ...] -> [k, S, ...], the dummy row 0
        x = torch.cat([x, x.new_zeros((1,) + x.shape[1:])]).index_select(0, rows_of)
        return x.view((k, S) + x.shape[1:])

    step = _ChunkStep(layer)
    state = {**dict(step.named_parameters()), **dict(step.named_buffers())}
    names, tensors = list(state), list(state.values())

    def body(*args):
        G_c, rad_c, hj_c, onehot_c, *rest = args
        h_c = rest[: len(h)]
        params = dict(zip(names, rest[len(h) : len(h) + len(names)]))
        inv, width = rest[-2], rest[-1]  # width: n_nb, an argument so that the loop body binds it
        G_c = G_c.reshape(S, width, G_c.shape[-1])
        rad_c = rad_c.reshape(S * width, rad_c.shape[-1])
        hj_c = hj_c.reshape(S * width, hj_c.shape[-2], hj_c.shape[-1])
        return torch.func.functional_call(step, params, (G_c, rad_c, hj_c, onehot_c, inv, *h_c))

    xs = [G, rad, hj, padded(onehot), *[padded(x) for x in h]]
    outs = map_impl(body, xs, [*tensors, inv_nb, n_nb])
    keep = torch.arange(m, device=centres.device)
    return [o.reshape((k * S,) + o.shape[2:]).index_select(0, keep) for o in outs]
