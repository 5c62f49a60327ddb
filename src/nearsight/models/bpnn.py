"""Behler-Parrinello neural network potential (Behler & Parrinello, PRL 98, 146401, 2007).

    E = Σ_i ε_i,   ε_i = s · NN_{Z_i}((G_i - μ) / σ) + e_{Z_i}

One feed-forward network per element, shared by all atoms of that element;
G_i are local descriptors (atom-centred symmetry functions or SOAP); μ, σ are descriptor statistics of the
training set; e_Z are per-element reference energies and s an energy scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .. import keys
from ..descriptors import build_descriptor
from ..nn import MLP


class UnknownElementError(ValueError):
    """A structure contains an element the model was not trained on."""


def element_indices(z_to_index: torch.Tensor, numbers: torch.Tensor, species: Sequence[int]) -> torch.Tensor:
    """Map atomic numbers to model element slots; unknown elements raise."""
    if numbers.numel() and (int(numbers.min()) < 0 or int(numbers.max()) >= z_to_index.shape[0]):
        raise UnknownElementError(f"atomic numbers out of range: {numbers.unique().tolist()}")
    index = z_to_index[numbers]
    if bool((index < 0).any()):
        from ase.data import chemical_symbols

        bad = sorted({chemical_symbols[int(z)] for z in numbers[index < 0]})
        known = [chemical_symbols[z] for z in species]
        raise UnknownElementError(f"element(s) {bad} not known to the model (species {known})")
    return index


class BehlerParrinello(nn.Module):
    """Descriptors (ACSF or SOAP) -> per-element MLP -> atomic energies ``[n_atoms]``.

    ``descriptor`` is ``{"type": "acsf" | "soap", **arguments of that class}``; without
    ``type`` it is ACSF.
    """

    model_type = "bpnn"

    def __init__(
        self,
        species: Sequence[int],
        descriptor: dict,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
    ) -> None:
        super().__init__()
        self.species = sorted(int(z) for z in species)
        self.descriptor_type = descriptor.get("type", "acsf")
        self.descriptor = build_descriptor(descriptor, self.species)
        self.cutoff = self.descriptor.neighbour_cutoff
        self.hidden = [int(h) for h in hidden]
        self.activation = activation
        n_feat = self.descriptor.n_features
        n_el = len(self.species)
        self.nets = nn.ModuleList(MLP(n_feat, self.hidden, 1, activation) for _ in range(n_el))
        self.register_buffer("feature_mean", torch.zeros(n_feat))
        self.register_buffer("feature_std", torch.ones(n_feat))
        self.register_buffer("energy_shift", torch.zeros(n_el))  # eV, per element
        self.register_buffer("energy_scale", torch.ones(()))  # eV
        z_to_index = torch.full((119,), -1, dtype=torch.int64)
        z_to_index[torch.tensor(self.species)] = torch.arange(n_el)
        self.register_buffer("z_to_index", z_to_index, persistent=False)

    def get_config(self) -> dict:
        desc = {"type": self.descriptor_type, **self.descriptor.get_config()}
        desc.pop("species")
        return {
            "species": self.species,
            "descriptor": desc,
            "hidden": self.hidden,
            "activation": self.activation,
        }

    @classmethod
    def from_config(cls, config: dict) -> BehlerParrinello:
        return cls(**config)

    def features(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw (unstandardised) descriptors ``[n_atoms, n_features]``."""
        return self.descriptor(graph)

    def set_statistics(
        self,
        feature_mean: torch.Tensor,
        feature_std: torch.Tensor,
        energy_shift: dict[int, float],
        energy_scale: float,
    ) -> None:
        """Descriptor standardisation and energy shift/scale from training statistics."""
        self.feature_mean.copy_(feature_mean)
        self.feature_std.copy_(torch.where(feature_std > 1e-8, feature_std, torch.ones_like(feature_std)))
        for z, e in energy_shift.items():
            if int(z) in self.species:
                self.energy_shift[self.species.index(int(z))] = float(e)
        self.energy_scale.fill_(float(energy_scale))

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        element = element_indices(self.z_to_index, graph[keys.ATOMIC_NUMBERS], self.species)
        x = (self.features(graph) - self.feature_mean) / self.feature_std  # [n_atoms, n_feat]
        out = x.new_zeros(x.shape[0])
        for k, net in enumerate(self.nets):
            idx = torch.nonzero(element == k).squeeze(-1)
            if idx.numel():
                out = out.index_put((idx,), net(x[idx]).squeeze(-1))
        return out * self.energy_scale + self.energy_shift[element]
