"""Total charge and spin multiplicity as inputs of a short-range model (electronic embedding).

A model that sees only the geometry gives one geometry in two charge states the same energy
(Ag₃⁺ and Ag₃⁻: Ko et al., Nat. Commun. 12, 398 (2021)).  Following SpookyNet's electronic
embedding (Unke et al., Nat. Commun. 12, 7273 (2021), eqs. 8-10), the per-structure quantities

    ψ_s = (max(Q, 0), max(−Q, 0), M − 1)        [n_graphs, 3]

(Q the total charge in e, ``keys.TOTAL_CHARGE``; M = 2S + 1 the spin multiplicity,
``keys.SPIN_MULTIPLICITY``, so M − 1 = 2S is the number of unpaired electrons) are distributed
over the atoms of each structure s by learned weights of the atoms' invariant features x_i:

    a_ic = ψ_c,s(i) · w_ic / Σ_{j ∈ s(i)} w_jc,      w_ic = softplus(ℓ_c(x_i)) + 10⁻⁶    [n_atoms, 3]

The logits ℓ are per-element networks on the descriptors in a Behler-Parrinello model, and a
dot-product attention ℓ_c = (x_i W) · k_c / √C on the 0e scalars before each layer of the
equivariant model (which adds e_i = Σ_c a_ic v_c, ``[n_atoms, C]``, to those scalars: invariant
inputs only, so equivariance is kept).  Cations and anions have their own channel (SpookyNet's
separate keys and values for ψ > 0 and ψ < 0).

Extensivity: Σ_i a_ic = ψ_c in every structure whatever its size.  The embedding carries the
structure's excess charge and unpaired electrons once, and the network decides where they sit (on
the metal of a complex, spread over a conjugated anion); Q itself on every atom would instead make
the energy of one extra electron grow with the number of atoms.  A neutral singlet (Q = 0, M = 1)
has a = 0 exactly, so the model is then the model without the embedding and keeps its locality; a
charged or open-shell structure's energies depend on all its atoms through Σ_j w_jc, the price of
a global quantity.  Graphs without ``keys.TOTAL_CHARGE`` / ``keys.SPIN_MULTIPLICITY`` are
neutral singlets.  The isolated-atom reference (:mod:`nearsight.models.reference`) stays that of
the neutral atom: a lone atom has E0_Z whatever Q and M.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import keys

N_CHANNELS = 3  # excess positive charge, excess negative charge, unpaired electrons
LOGIT_HIDDEN = 16  # hidden width of the Behler-Parrinello model's per-element logit networks


def electronic_state(graph: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """ψ ``[n_graphs, 3]``: (max(Q, 0), max(−Q, 0), M − 1) per structure, in ``like``'s dtype."""
    # exported models (nearsight.models.export) get no n_atoms: one cell per structure
    n_graphs = graph[keys.N_ATOMS].shape[0] if keys.N_ATOMS in graph else graph[keys.CELL].shape[0]
    if keys.TOTAL_CHARGE in graph:
        charge = graph[keys.TOTAL_CHARGE].to(like.dtype)
    else:
        charge = like.new_zeros(n_graphs)
    if keys.SPIN_MULTIPLICITY in graph:
        unpaired = graph[keys.SPIN_MULTIPLICITY].to(like.dtype) - 1.0
    else:
        unpaired = like.new_zeros(n_graphs)
    return torch.stack([torch.relu(charge), torch.relu(-charge), unpaired], 1)


def distribute(logits: torch.Tensor, graph: dict[str, torch.Tensor]) -> torch.Tensor:
    """Shares a ``[n_atoms, 3]`` of ψ from logits ``[n_atoms, 3]``; Σ_{i ∈ s} a_ic = ψ_c,s exactly."""
    batch = graph[keys.BATCH]
    psi = electronic_state(graph, logits)  # [n_graphs, 3]
    # the floor 1e-6 keeps Σ_j w_jc > 0 where every softplus underflows (float32 logits below ~ −100)
    weights = torch.nn.functional.softplus(logits) + 1e-6  # [n_atoms, 3]
    totals = torch.zeros_like(psi).index_add(0, batch, weights)  # [n_graphs, 3]
    return psi.index_select(0, batch) * weights / totals.index_select(0, batch)


class ElectronicEmbedding(nn.Module):
    """The embedding of (Q, M) added to the 0e scalars before each of ``n_layers`` layers of the
    equivariant model: ``e_i = Σ_c a_ic v_tc`` ``[n_atoms, channels]`` with logits
    ``ℓ_ic = (x_i W_t) · k_tc / √C`` of the layer's input scalars x ``[n_atoms, channels]``."""

    def __init__(self, channels: int, n_layers: int) -> None:
        super().__init__()
        self.channels = int(channels)
        self.query = nn.Parameter(torch.randn(n_layers, channels, channels) / math.sqrt(channels))
        self.key = nn.Parameter(torch.randn(n_layers, channels, N_CHANNELS))
        self.value = nn.Parameter(torch.randn(n_layers, N_CHANNELS, channels))

    def forward(self, scalars: torch.Tensor, graph: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
        logits = (scalars @ self.query[layer]) @ self.key[layer] / math.sqrt(self.channels)  # [n, 3]
        return distribute(logits, graph) @ self.value[layer]  # [n, C]
