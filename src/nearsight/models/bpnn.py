"""Behler-Parrinello neural network potential (Behler & Parrinello, PRL 98, 146401, 2007).

    E = Σ_i ε_i,   ε_i = E0_{Z_i} + g_i · [s · NN_{Z_i}(m ⊙ (S(G_i) - μ) / σ') + e_{Z_i} − E0_{Z_i}]

One feed-forward network per element, shared by all atoms of that element;
G_i are local descriptors (atom-centred symmetry functions or SOAP); μ, σ are descriptor statistics of the
training set, S holds each component softly within its element's training range (``saturate``),
σ' = sqrt(σ² + (0.001 rms)²) and the mask m drops components that were constant in
training (safe standardisation, see ``set_statistics``); e_Z is the mean energy per atom of
element Z in training, E0_Z its isolated-atom energy and g_i the switch of
:mod:`nearsight.models.reference` (≈ 1 with neighbours, 0 without), so an isolated atom has
ε = E0_Z exactly; s is an energy scale.  In evaluation mode the model also returns ``keys.EXTRAPOLATION``: per atom,
the descriptor components outside the range its element had in training (n2p2's extrapolation
warnings), so a single model says when it leaves its data.

Multi-head (multi-fidelity) models: with ``heads=["hf", "mp2"]`` each element network
ends in one output per head, and each head has its own per-element energies e_Z^h; all
layers before the last are shared.  A structure uses the head ``graph[keys.HEAD]`` names
(an index into ``heads``), the last head by default, so list the levels from cheap to
accurate.

Total charge and spin (``charge_embedding=True``): the network input of atom i is extended by its
shares a_i ``[3]`` of the structure's excess positive and negative charge and unpaired electrons
(:mod:`nearsight.models.electronic`: Σ_i a_i = (max(Q, 0), max(−Q, 0), M − 1) per structure,
distributed by per-element networks on the descriptors), so one geometry in two charge or spin
states has two energies; a neutral singlet has a_i = 0.

Several electronic states (``n_states=S > 1``, :mod:`nearsight.nonadiabatic`): each element network
ends in S diagonal contributions and S(S − 1)/2 couplings per atom, summed per structure into the
diabatic matrix V_d (``keys.ATOMIC_DIABATIC``); the diagonal gets the per-element shifts e_Z.  The
descriptors are invariant under reflections, so only couplings that keep their sign under a
reflection (``couplings="scalar"``, or ``state_parity`` with every state of the same parity) can
be represented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .. import keys
from ..descriptors import build_descriptor
from ..descriptors.cache import cached_features, has_cache
from ..nn import MLP, buffer_value, is_tracing
from ..nonadiabatic.matrix import INVARIANT_MODEL_ERROR, assemble, check_states, n_pairs
from .charges import conserve_charges
from .electronic import LOGIT_HIDDEN, N_CHANNELS, distribute
from .reference import switch, switched

FEATURE_STD_FLOOR = 1e-3  # σ' = sqrt(σ² + (FLOOR · rms)²): a component's scale, relative to the typical one
FEATURE_CONSTANT = 1e-6  # σ ≤ CONSTANT · rms: constant in training, masked
EXTRAPOLATION_MARGIN = 0.05  # a component extrapolates beyond its training range ± 5 % of the range
SATURATION_WIDTH = 0.5  # descriptors saturate within about half their range beyond it (saturate())


class UnknownElementError(ValueError):
    """A structure contains an element the model was not trained on."""


def element_indices(z_to_index: torch.Tensor, numbers: torch.Tensor, species: Sequence[int]) -> torch.Tensor:
    """Map atomic numbers to model element slots; unknown elements raise (traced for export: the
    caller, e.g. the LAMMPS plugin's ``pair_coeff``, has checked the elements)."""
    if is_tracing():
        return z_to_index[numbers]
    if numbers.numel() and (int(numbers.min()) < 0 or int(numbers.max()) >= z_to_index.shape[0]):
        raise UnknownElementError(f"atomic numbers out of range: {numbers.unique().tolist()}")
    index = z_to_index[numbers]
    if bool((index < 0).any()):
        from ase.data import chemical_symbols

        bad = sorted({chemical_symbols[int(z)] for z in numbers[index < 0]})
        known = [chemical_symbols[z] for z in species]
        raise UnknownElementError(f"element(s) {bad} not known to the model (species {known})")
    return index


def _per_element(nets: nn.ModuleList, x: torch.Tensor, element: torch.Tensor, n_out: int) -> torch.Tensor:
    """``[n_atoms, n_out]``: each atom through its element's network (traced for export, an element
    without atoms is not skipped: no branch depends on the data)."""
    traced = is_tracing()
    out = x.new_zeros((x.shape[0], n_out))
    for k, net in enumerate(nets):
        idx = torch.nonzero(element == k).squeeze(-1)
        if traced or idx.numel():
            out = out.index_put((idx,), net(x[idx]))
    return out


class BehlerParrinello(nn.Module):
    """Descriptors (ACSF or SOAP) -> per-element MLP -> ``{keys.ATOMIC_ENERGIES: [n_atoms]}``.

    ``descriptor`` is ``{"type": "acsf" | "soap", **arguments of that class}``; without
    ``type`` it is ACSF.
    """

    model_type = "bpnn"
    # buffers a model file written before they existed lacks: loaded with their defaults
    OPTIONAL_BUFFERS = (
        "feature_mask", "feature_min", "feature_max", "isolated_energy", "isolated_reference",
    )  # fmt: skip

    def __init__(
        self,
        species: Sequence[int],
        descriptor: dict,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
        heads: Sequence[str] | None = None,
        charges: bool = False,
        charge_embedding: bool = False,
        n_states: int = 1,
        couplings: str = "scalar",
        epsilon: float = 1e-10,
        state_parity: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        kinds = check_states(n_states, couplings, "Behler-Parrinello model", state_parity)
        if any(kind != "scalar" for kind in kinds):
            what = (
                f"couplings = {couplings!r}"
                if state_parity is None
                else f"state_parity = {list(state_parity)}"
            )
            raise ValueError(INVARIANT_MODEL_ERROR.format(what=what, model="ACSF/SOAP"))
        if n_states > 1 and (heads or charges):
            raise ValueError(
                "Behler-Parrinello model: n_states > 1 does not combine with heads or a charge head"
            )
        self.n_states, self.couplings, self.epsilon = int(n_states), couplings, float(epsilon)
        self.state_parity = [int(p) for p in state_parity] if state_parity is not None else None
        self.heads = [str(h) for h in heads] if heads else []
        if len(set(self.heads)) != len(self.heads):
            raise ValueError(f"head names must be distinct, got {self.heads}")
        n_heads = max(1, len(self.heads))
        self.species = sorted(int(z) for z in species)
        self.descriptor_type = descriptor.get("type", "acsf")
        self.descriptor = build_descriptor(descriptor, self.species)
        self.cutoff = self.descriptor.neighbour_cutoff
        self.hidden = [int(h) for h in hidden]
        self.activation = activation
        n_feat = self.descriptor.n_features
        n_el = len(self.species)
        # total charge and spin: per-element logits of the shares appended to the network input
        self.electronic_nets = (
            nn.ModuleList(MLP(n_feat, [LOGIT_HIDDEN], N_CHANNELS, activation) for _ in range(n_el))
            if charge_embedding
            else None
        )
        n_in = n_feat + (N_CHANNELS if charge_embedding else 0)
        n_out = n_heads if self.n_states == 1 else self.n_states + n_pairs(self.n_states)
        self.nets = nn.ModuleList(MLP(n_in, self.hidden, n_out, activation) for _ in range(n_el))
        # charge head: one network per element on the same inputs (nearsight.models.charges)
        self.charge_nets = (
            nn.ModuleList(MLP(n_in, self.hidden, 1, activation) for _ in range(n_el)) if charges else None
        )
        self.register_buffer("feature_mean", torch.zeros(n_feat))
        self.register_buffer("feature_std", torch.ones(n_feat))
        # 0 for descriptor components that were constant in training (their weights never learned)
        self.register_buffer("feature_mask", torch.ones(n_feat))
        # raw descriptor range per element seen in training: outside it the model extrapolates
        self.register_buffer("feature_min", torch.full((n_el, n_feat), -math.inf))
        self.register_buffer("feature_max", torch.full((n_el, n_feat), math.inf))
        # eV, per element ([n_heads, n_elements] for multi-head models): e_Z, the mean energy per
        # atom in training, and E0_Z, the isolated atom's (nearsight.models.reference)
        shape = (n_heads, n_el) if self.heads else (n_el,)
        self.register_buffer("energy_shift", torch.zeros(shape))
        self.register_buffer("isolated_energy", torch.zeros(shape))
        # 1: an isolated atom has ε = E0_Z exactly (nearsight.models.reference); 0: files before it
        self.register_buffer("isolated_reference", torch.zeros(()))
        self.register_buffer("energy_scale", torch.ones(()))  # eV
        z_to_index = torch.full((119,), -1, dtype=torch.int64)
        z_to_index[torch.tensor(self.species)] = torch.arange(n_el)
        self.register_buffer("z_to_index", z_to_index, persistent=False)

    def get_config(self) -> dict:
        desc = {"type": self.descriptor_type, **self.descriptor.get_config()}
        desc.pop("species")
        config = {
            "species": self.species,
            "descriptor": desc,
            "hidden": self.hidden,
            "activation": self.activation,
        }
        if self.heads:
            config["heads"] = self.heads
        if self.charge_nets is not None:
            config["charges"] = True
        if self.electronic_nets is not None:
            config["charge_embedding"] = True
        if self.n_states > 1:
            config.update(n_states=self.n_states, couplings=self.couplings, epsilon=self.epsilon)
        if self.state_parity is not None:
            config["state_parity"] = self.state_parity
        return config

    def head_index(self, head: str | None) -> int:
        """Index of a head by name (``None``: the default, last head)."""
        if not self.heads:
            if head is not None:
                raise ValueError(f"head {head!r} asked of a single-head model")
            return 0
        if head is None:
            return len(self.heads) - 1
        if head not in self.heads:
            raise ValueError(f"unknown head {head!r}; the model has {self.heads}")
        return self.heads.index(head)

    @classmethod
    def from_config(cls, config: dict) -> BehlerParrinello:
        return cls(**config)

    def features(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw (unstandardised) descriptors ``[n_atoms, n_features]``; from the graph's descriptor
        cache where training stored one (:mod:`nearsight.descriptors.cache`)."""
        if has_cache(graph):
            return cached_features(graph)
        return self.descriptor(graph)

    @torch.no_grad()
    def set_statistics(
        self,
        feature_mean: torch.Tensor,
        feature_std: torch.Tensor,
        energy_shift: dict[int, float] | dict[str, dict[int, float]],
        energy_scale: float,
        feature_range: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Descriptor standardisation and energy shift/scale from training statistics.

        Safe standardisation: with ``rms`` the typical size of a descriptor component
        (sqrt of the mean of μ² + σ² over components), each component is divided by
        sqrt(σ² + (0.001 rms)²), so one that barely varied in training is not amplified without
        bound in a new environment, and components constant in training (σ ≤ 1e-6 rms, whose
        weights never received a gradient) are masked out.  ``feature_range``: the raw
        ``(min, max)`` per element ``[n_elements, n_features]`` seen in training, for
        extrapolation detection.  ``energy_shift``: per element, or for multi-head models
        ``{head: {Z: e}}``.
        """
        rms = float(torch.sqrt((feature_mean**2 + feature_std**2).mean())) if feature_std.numel() else 1.0
        rms = rms if rms > 0 else 1.0
        self.feature_mean.copy_(feature_mean)
        self.feature_std.copy_(torch.sqrt(feature_std**2 + (FEATURE_STD_FLOOR * rms) ** 2))
        self.feature_mask.copy_((feature_std > FEATURE_CONSTANT * rms).to(self.feature_mask.dtype))
        if feature_range is not None:
            self.feature_min.copy_(feature_range[0])
            self.feature_max.copy_(feature_range[1])
        self.set_energy_shift(energy_shift)
        self.energy_scale.fill_(float(energy_scale))

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        """``[n_atoms, n_features]`` network inputs: (G − μ)/σ', constant components masked."""
        return (features - self.feature_mean) / self.feature_std * self.feature_mask

    def saturate(self, features: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
        """Descriptors softly held to their element's training range ``[lo, hi]``: unchanged inside,
        ``hi + w tanh((G − hi)/w)`` above (and alike below), w = SATURATION_WIDTH (hi − lo) plus
        1e-3 of the typical component size.  The networks never see inputs much beyond what they
        were trained on, so a new environment gives bounded energies and forces (twice
        continuously differentiable: MD conserves energy across the range edge); the training data
        lie inside by construction and train exactly as without it."""
        low, high = self.feature_min[element], self.feature_max[element]  # [n_atoms, n_features]
        if not buffer_value(
            lambda: bool(torch.isfinite(self.feature_min).all() and torch.isfinite(self.feature_max).all())
        ):
            return features  # no training range recorded (files written before it)
        scale = torch.sqrt((self.feature_mean**2 + self.feature_std**2).mean())
        width = SATURATION_WIDTH * (high - low) + 1e-3 * scale
        above = high + width * torch.tanh((features - high) / width)
        below = low - width * torch.tanh((low - features) / width)
        return torch.where(features > high, above, torch.where(features < low, below, features))

    def extrapolation(self, features: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
        """``[n_atoms]``: descriptor components of each atom outside its element's training range,
        widened on both sides by ``EXTRAPOLATION_MARGIN`` of the range (thermal excursions of the
        training distribution are not counted) and 1e-6 of the typical component size (components
        constant in training count as soon as they change: a new kind of neighbour)."""
        low, high = self.feature_min[element], self.feature_max[element]  # [n_atoms, n_features]
        scale = float(torch.sqrt((self.feature_mean**2 + self.feature_std**2).mean()))
        tol = EXTRAPOLATION_MARGIN * (high - low).nan_to_num(posinf=0.0) + 1e-6 * scale
        outside = (features < low - tol) | (features > high + tol)
        return outside.sum(-1).to(features.dtype)

    @torch.no_grad()
    def set_energy_shift(self, energy_shift: dict) -> None:
        """Per-element energies e_Z (``{Z: e}``, or ``{head: {Z: e}}`` for multi-head models)."""
        self._set_per_element(self.energy_shift, energy_shift)

    @torch.no_grad()
    def set_charge_offsets(self, charges: dict[int, float]) -> None:
        """Per-element charge offsets c_Z (e, ``{Z: c}``): the output bias of each element's charge
        network, so the head starts from these charges."""
        if self.charge_nets is None:
            raise ValueError("set_charge_offsets: this model has no charge head (charges=False)")
        for z, c in charges.items():
            if int(z) in self.species:
                self.charge_nets[self.species.index(int(z))][-1].bias.fill_(float(c))

    @torch.no_grad()
    def set_isolated_energy(self, isolated_energy: dict) -> None:
        """E0_Z, the energy of an isolated atom (``{Z: e}`` or ``{head: {Z: e}}``): from now on a
        lone atom has exactly this energy (:mod:`nearsight.models.reference`)."""
        self._set_per_element(self.isolated_energy, isolated_energy)
        self.isolated_reference.fill_(1.0)

    def _set_per_element(self, buffer: torch.Tensor, values: dict) -> None:
        per_head = {self.heads[-1] if self.heads else None: values}
        if self.heads and all(isinstance(k, str) for k in values):
            per_head = values
        for head, by_z in per_head.items():
            row = buffer[self.head_index(head)] if self.heads else buffer
            for z, e in by_z.items():
                if int(z) in self.species:
                    row[self.species.index(int(z))] = float(e)

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{keys.ATOMIC_ENERGIES: [n_atoms]}`` (eV), ``keys.CHARGES`` with a charge head, and in
        evaluation mode ``keys.EXTRAPOLATION`` (descriptor components outside the training range)."""
        element = element_indices(self.z_to_index, graph[keys.ATOMIC_NUMBERS], self.species)
        features = self.features(graph)  # [n_atoms, n_feat]
        x = self.standardise(self.saturate(features, element))  # network inputs, once for all heads
        if self.electronic_nets is not None:  # shares of the structure's charge and unpaired electrons
            logits = _per_element(self.electronic_nets, x, element, N_CHANNELS)  # [n_atoms, 3]
            x = torch.cat([x, distribute(logits, graph)], 1)  # [n_atoms, n_feat + 3]
        if self.n_states > 1:
            out = {keys.ATOMIC_DIABATIC: self.atomic_diabatic(x, element)}
        else:
            out = {keys.ATOMIC_ENERGIES: self.atomic_energies(graph, x, element)}
        if self.charge_nets is not None:
            raw = _per_element(self.charge_nets, x, element, 1).squeeze(-1)
            out[keys.CHARGES] = conserve_charges(raw, graph)  # q_i (e), Σq = Q per structure
        if not self.training and not is_tracing():
            out[keys.EXTRAPOLATION] = self.extrapolation(features.detach(), element)
        return out

    def atomic_energies(
        self, graph: dict[str, torch.Tensor], x: torch.Tensor, element: torch.Tensor
    ) -> torch.Tensor:
        """ε_i ``[n_atoms]`` (eV) of the structure's head (the last head by default) from the
        network inputs ``x`` (standardised descriptors)."""
        n_heads = max(1, len(self.heads))
        out = _per_element(self.nets, x, element, n_heads)  # [n_atoms, n_heads]
        if not self.heads:
            rest = out.squeeze(-1) * self.energy_scale + self.energy_shift[element]
            return self._switched(graph, self.isolated_energy[element], rest)
        if keys.HEAD in graph:
            head = graph[keys.HEAD][graph[keys.BATCH]]  # [n_atoms]
        else:
            head = torch.full_like(element, n_heads - 1)
        picked = out.gather(1, head[:, None]).squeeze(-1)
        rest = picked * self.energy_scale + self.energy_shift[head, element]
        return self._switched(graph, self.isolated_energy[head, element], rest)

    def atomic_diabatic(self, x: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
        """Per-atom contributions ``[n_atoms, S, S]`` (eV) to the diabatic matrix: diagonal
        s · NN_a + e_Z, couplings s · NN_ab."""
        S = self.n_states
        raw = _per_element(self.nets, x, element, S + n_pairs(S)) * self.energy_scale  # [n_atoms, S + P]
        return assemble(raw[:, :S] + self.energy_shift[element][:, None], raw[:, S:])

    def _switched(
        self, graph: dict[str, torch.Tensor], isolated: torch.Tensor, rest: torch.Tensor
    ) -> torch.Tensor:
        if not buffer_value(
            lambda: bool(self.isolated_reference > 0)
        ):  # files written before the isolated-atom reference
            return rest
        return switched(isolated, switch(graph, self.cutoff), rest)
