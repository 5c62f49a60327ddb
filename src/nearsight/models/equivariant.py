"""E(3)-equivariant message-passing potential: MACE-style higher-order messages, NequIP-style for ν = 1.

Per layer t (Batatia et al., NeurIPS 2022, eqs. 8-11; Batzner et al., Nat. Commun. 2022):

    h̃_j      = W_up h_j                                       (channel mixing per irrep)
    A_i,c,LM = (1/N̄) Σ_j Σ_paths R_path,c(r_ij) C^{LM}_{l1 m1, l2 m2} h̃_j,c,l1m1 Y_l2m2(r̂_ij)
    A'       = W_A A                  (W_A,Z_i in the first layer with element_mix, as MACE)
    B_i,c,LM = Σ_{ν=1}^{ν_max} Σ_η w^{(ν)}_{Z_i,η,c} Σ_{k} U^{(ν)}_{η,LM,k} Π_{q=1..ν} A'_i,c,k_q
    h_i      = W_B B_i + W_skip h_i        (t > 0; W_skip,Z_i with element_mix)
               gate: scalars SiLU, l > 0 features × sigmoid(gate scalars)
    ε_i      = E0_{Z_i} + g_i (s_{Z_i} Σ_t readout_t(h_i^{0e}) + e_{Z_i} − E0_{Z_i})   (g: nearsight.models.reference)

With ``charge_embedding`` the 0e input scalars of every layer get e_i(Q, M), the structure's total
charge and spin distributed over its atoms by attention (:mod:`nearsight.models.electronic`).

R(r) is an MLP (no biases) of enveloped Bessel functions (:mod:`~nearsight.models.edge_basis`), so
messages go to zero smoothly at r_c.  N̄ is the mean neighbour count of the training set.  The
products are channel-wise (depthwise), as in MACE.

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

Several electronic states (``n_states=S > 1``, :mod:`nearsight.nonadiabatic`): the readouts give S
diagonal contributions and, with ``couplings`` ``scalar`` or ``both``, S(S − 1)/2 couplings per atom
from the 0e scalars; with ``pseudoscalar`` or ``both`` (needs ``parity="both"``) the last layer also
outputs 0o features, and a linear map without bias gives couplings that change sign under a
reflection; ``state_parity`` (±1 per state) takes the 0e readout for pairs of equal parity and the
0o one for the others, so the energies stay exactly reflection invariant.  Summed per structure
they form the diabatic matrix V_d (``keys.ATOMIC_DIABATIC``).

Modules: :mod:`~nearsight.models.irreps` (irreps, Wigner 3j, spherical-harmonic polynomials, the
coupling tensors U), :mod:`~nearsight.models.edge_basis` (spherical harmonics, radial basis,
padded neighbour lists), :mod:`~nearsight.models.interaction` (one layer; its symmetric product in
:mod:`~nearsight.models.symmetric_product`), :mod:`~nearsight.models.electronic` (total charge and
spin), :mod:`~nearsight.models.energy_statistics` (e_Z, s_Z, N̄, E0_Z),
:mod:`~nearsight.models.equivariant_spec` (presets, the config mapping, argument checks), this one
(the potential).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .. import keys
from ..nn import ExactConstants, buffer_value, is_tracing
from ..nonadiabatic.matrix import assemble, check_states, n_pairs
from .bpnn import element_indices
from .charges import conserve_charges
from .edge_basis import edge_basis, neighbour_layout
from .electronic import ElectronicEmbedding
from .energy_statistics import EnergyStatistics
from .equivariant_spec import PRESETS, check_arguments, equivariant_arguments
from .interaction import Interaction, RadialMLP, stacked_weights
from .irreps import Irrep, irrep_name, irreps_up_to, sh_polynomials
from .receptive import layer_centres, run_on_centres
from .reference import switch, switched

__all__ = ["PRESETS", "EquivariantPotential", "build_equivariant", "equivariant_arguments"]


class EquivariantPotential(EnergyStatistics, ExactConstants):
    """E(3)-equivariant MACE/NequIP-style potential -> ``{keys.ATOMIC_ENERGIES: [n_atoms]}`` (eV).

    ``channels`` features per irrep; hidden irreps l ≤ ``l_max`` (natural parity, or both with
    ``parity="both"``); spherical harmonics and A up to ``sh_l_max``; symmetric products up to
    ``correlation`` (ν; 1 gives two-body NequIP-style messages); ``num_layers`` interactions;
    ``element_mix``: per-element channel mixing of the first layer's A and later residuals (MACE's
    self-connection; off by default, so files written before the option load unchanged).
    """

    model_type = "equivariant"
    # buffers a model file written before they existed lacks: loaded with their defaults
    OPTIONAL_BUFFERS = ("isolated_energy", "isolated_reference", "charge_offset")  # files before them

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
        charges: bool = False,
        charge_embedding: bool = False,
        n_states: int = 1,
        couplings: str = "scalar",
        epsilon: float = 1e-10,
        state_parity: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        kinds = check_states(n_states, couplings, "equivariant model", state_parity)
        odd_pairs = [kind != "scalar" for kind in kinds]  # pairs with a pseudoscalar part
        even_pairs = [kind != "pseudoscalar" for kind in kinds]  # pairs with a scalar part
        if any(odd_pairs) and parity != "both":
            what = f"state_parity = {list(state_parity)}" if state_parity else f"couplings = {couplings!r}"
            raise ValueError(
                f"equivariant model: {what} needs a pseudoscalar (0o) readout, available "
                f"with parity = 'both' (this model has parity = {parity!r})"
            )
        if n_states > 1 and charges:
            raise ValueError("equivariant model: n_states > 1 does not combine with a charge head")
        self.n_states, self.couplings, self.epsilon = int(n_states), couplings, float(epsilon)
        self.state_parity = [int(p) for p in state_parity] if state_parity is not None else None
        pseudo = n_states > 1 and any(odd_pairs)
        scalar_couplings = n_states > 1 and any(even_pairs)
        # readout columns from the 0e scalars: energy, or S diagonal entries and the scalar couplings
        n_out = 1 if n_states == 1 else n_states + (n_pairs(n_states) if scalar_couplings else 0)
        # which pairs take the scalar readout and which the pseudoscalar one (state_parity mixes them)
        self.register_buffer("even_pairs", torch.tensor(even_pairs, dtype=torch.bool), persistent=False)
        self.register_buffer("odd_pairs", torch.tensor(odd_pairs, dtype=torch.bool), persistent=False)
        check_arguments(
            species, cutoff, parity,
            channels=channels, num_layers=num_layers, correlation=correlation, n_radial=n_radial,
            readout_hidden=readout_hidden, envelope_p=envelope_p, l_max=l_max, sh_l_max=sh_l_max,
        )  # fmt: skip
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

        monos, P = sh_polynomials(sh_l_max)
        self.register_buffer("sh_exponents", torch.tensor(monos, dtype=torch.long), persistent=False)
        self.register_constant("sh_coefficients", torch.from_numpy(P))
        bessel_n = torch.arange(1, n_radial + 1, dtype=torch.float64) * math.pi / self.cutoff
        self.register_constant("bessel_n", bessel_n, persistent=True)  # in the state dict of older files

        self.embedding = nn.Parameter(torch.randn(n_el, C))
        hidden = irreps_up_to(l_max, parity)
        a_allowed = irreps_up_to(sh_l_max, parity)
        self.layers = nn.ModuleList()
        irreps_in: list[Irrep] = [(0, 1)]
        for t in range(num_layers):
            last = t == num_layers - 1
            out = ([(0, 1), (0, -1)] if pseudo else [(0, 1)]) if last else hidden
            self.layers.append(
                Interaction(
                    irreps_in, a_allowed, out, sh_l_max, C, n_el, correlation, n_radial,
                    self.radial_hidden, residual=t > 0, gate=gate and not last,
                    element_mix=self.element_mix,
                )
            )  # fmt: skip
            irreps_in = out
        self.readouts = stacked_weights(num_layers - 1, C, n_out)
        self.readout_mlp = RadialMLP([C, readout_hidden, n_out])
        # pseudoscalar couplings: odd in the last layer's 0o features (no bias)
        self.pseudo_readout = nn.Linear(C, n_pairs(n_states), bias=False) if pseudo else None
        # charge head: a scalar readout of the last layer (nearsight.models.charges)
        self.charge_readout = nn.Linear(C, 1) if charges else None
        # per-element charge offsets c_Z added to the readout (set by nearsight.longrange.charge_fit)
        self.charge_offset = nn.Parameter(torch.zeros(n_el, dtype=torch.float64)) if charges else None
        # total charge and spin: added to the 0e input scalars of every layer (first in its irreps)
        self.electronic = ElectronicEmbedding(C, num_layers) if charge_embedding else None
        self.register_buffer("avg_num_neighbours", torch.ones((), dtype=torch.float64))
        self.register_buffer("energy_shift", torch.zeros(n_el, dtype=torch.float64))  # eV, e_Z
        # the isolated-atom reference (nearsight.models.reference): E0_Z (eV), on when 1
        self.register_buffer("isolated_energy", torch.zeros(n_el, dtype=torch.float64))
        self.register_buffer("isolated_reference", torch.zeros((), dtype=torch.float64))
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
            **({"charges": True} if self.charge_readout is not None else {}),
            **({"charge_embedding": True} if self.electronic is not None else {}),
            **(
                {"n_states": self.n_states, "couplings": self.couplings, "epsilon": self.epsilon}
                if self.n_states > 1
                else {}
            ),
            **({"state_parity": self.state_parity} if self.state_parity is not None else {}),
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
    @torch.no_grad()
    def set_charge_offsets(self, charges: dict[int, float]) -> None:
        """Per-element charge offsets c_Z (e, ``{Z: c}``) of the charge head: the starting charges."""
        if self.charge_offset is None:
            raise ValueError("set_charge_offsets: this model has no charge head (charges=False)")
        for z, c in charges.items():
            if int(z) in self.species:
                self.charge_offset[self.species.index(int(z))] = float(c)

    # ----------------------------------------------------------------- forward
    def _edges(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spherical harmonics ``[E, (l+1)²]`` and enveloped Bessel features ``[E, n_radial]``."""
        return edge_basis(
            vectors, self.sh_exponents, self.sh_coefficients, self.sh_l_max, self.bessel_n, self.cutoff,
            self.envelope_p,
        )  # fmt: skip

    neighbour_layout = staticmethod(neighbour_layout)

    @torch.jit.unused
    def _checked_elements(self, numbers: torch.Tensor) -> torch.Tensor:
        return element_indices(self.z_to_index, numbers, self.species)

    def elements(self, numbers: torch.Tensor) -> torch.Tensor:
        """Element slot of each atom; unknown elements raise (not while traced for export: the caller,
        e.g. the LAMMPS plugin's ``pair_coeff``, has checked the elements)."""
        if not torch.jit.is_scripting() and is_tracing():
            return self.z_to_index[numbers]
        if torch.jit.is_scripting():
            index = self.z_to_index[numbers]
            if bool((index < 0).any()):
                raise RuntimeError("the structure contains an element the model was not trained on")
            return index
        return self._checked_elements(numbers)

    def run(self, graph: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """Atomic energies ``[n]`` (diabatic models: the readout columns ``[n, S + P]``, unscaled) and,
        per layer, the A blocks then the h irreps ``[n, 2l+1, C]``."""
        if torch.jit.is_scripting():
            pass  # (TorchScript export: every atom)
        else:
            restricted = self._run_on_centres(graph)
            if restricted is not None:  # the LAMMPS plugin's own atoms and their receptive field
                return restricted, []
        element = self.elements(graph[keys.ATOMIC_NUMBERS])
        vectors = graph[keys.EDGE_VECTORS]
        edge_index = graph[keys.EDGE_INDEX]
        n = element.shape[0]
        traced = False  # export traces per-edge messages, no padding
        if not torch.jit.is_scripting():
            traced = is_tracing()
        # padded neighbour lists: the dummy edge lies beyond the cutoff, so its radial weights are 0
        n_slots = graph[keys.NEIGHBOUR_SLOTS].shape[0] if traced else -1
        pad, n_nb = self.neighbour_layout(edge_index[0], n, n_slots)
        dummy = torch.cat([vectors.new_full((1, 1), 2.0 * self.cutoff), vectors.new_zeros(1, 2)], 1)
        Y, radial = self._edges(torch.cat([vectors, dummy]).index_select(0, pad))
        G_in = Y.view(n, n_nb, Y.shape[1])
        nbr = torch.cat([edge_index[1], edge_index[1].new_zeros(1)]).index_select(0, pad)
        onehot = torch.nn.functional.one_hot(element, len(self.species)).to(vectors.dtype)
        h = [self.embedding.index_select(0, element)[:, None, :]]  # [n, 1, C] 0e
        feats: list[list[torch.Tensor]] = []
        energy = Y.new_zeros(n, self.readout_mlp.out.out_features)  # [n, 1] or [n, S + P]
        inv_nb = 1.0 / self.avg_num_neighbours
        for t, layer in enumerate(self.layers):
            if self.electronic is not None:  # (Q, M) into the 0e block, h[0] [n, 1, C]
                h[0] = h[0] + self.electronic(h[0][:, 0], graph, t)[:, None, :]
            hidden = layer.radial.hidden(radial)
            A = [a * inv_nb for a in layer.convolution(h, G_in, hidden, nbr, onehot, chunked=not traced)]
            if traced:
                B = layer.traced_symmetric_product(torch.cat(A, 1), onehot)
            else:
                B = layer.symmetric_product(torch.cat(A, 1), element)
            h_new = layer.update(B, h, onehot)
            scalars = h_new[layer.scalar_index][:, 0]
            if t < self.num_layers - 1:
                energy = energy + scalars @ self.readouts[t]
            else:
                energy = energy + self.readout_mlp(scalars)
            feats.append(A + h_new)
            h = layer.apply_gate(h_new)
        if self.n_states > 1:
            return energy, feats
        energy = energy.squeeze(-1) * self.energy_scale[element] + self.energy_shift[element]
        if torch.jit.is_scripting():
            isolated = bool(self.isolated_reference > 0)
        else:
            isolated = self._isolated_reference()
        if isolated:  # an isolated atom at E0_Z (files before it: e_Z)
            energy = switched(self.isolated_energy[element], switch(graph, self.cutoff), energy)
        return energy, feats

    @torch.jit.unused
    def _run_on_centres(self, graph: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The energies of ``keys.LAYER_CENTRES`` (nearsight.models.receptive), or None: the graph has
        none, or every atom's features are needed (a charge head, several states, charge and spin)."""
        if self.charge_readout is not None or self.n_states > 1 or self.electronic is not None:
            return None
        centres = layer_centres(graph, self.num_layers)
        return None if centres is None else run_on_centres(self, graph, centres)

    @torch.jit.unused
    def _isolated_reference(self) -> bool:
        return buffer_value(lambda: bool(self.isolated_reference > 0))

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

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{keys.ATOMIC_ENERGIES: [n_atoms]}`` (eV), with a charge head also ``keys.CHARGES``
        (e, conserved per structure)."""
        if not torch.jit.is_scripting() and self.n_states > 1:  # (TorchScript export: one state)
            return self._diabatic_outputs(graph)
        energy, feats = self.run(graph)
        out = {keys.ATOMIC_ENERGIES: energy}
        if self.charge_readout is not None:
            scalars = feats[-1][-1][:, 0]  # [n_atoms, C]: the last layer's 0e features
            raw = self.charge_readout(scalars).squeeze(-1)
            if self.charge_offset is not None:
                raw = raw + self.charge_offset.to(raw.dtype)[self.elements(graph[keys.ATOMIC_NUMBERS])]
            out[keys.CHARGES] = conserve_charges(raw, graph)
        return out

    @torch.jit.unused
    def _diabatic_outputs(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{keys.ATOMIC_DIABATIC: [n, S, S]}`` (eV): per-atom contributions to V_d from the readout
        columns ``[n, S (+ P)]`` and, for pseudoscalar couplings, the last layer's 0o features."""
        raw, feats = self.run(graph)
        last = feats[-1]  # the last layer's A blocks, then h: 0e (, 0o)
        S, n = self.n_states, raw.shape[0]
        element = self.elements(graph[keys.ATOMIC_NUMBERS])
        scale = self.energy_scale[element][:, None]
        diagonal = raw[:, :S] * scale + self.energy_shift[element][:, None]
        couplings = raw.new_zeros(n, n_pairs(S))
        if raw.shape[1] > S:  # scalar couplings (0e), on the pairs of equal state parity
            couplings = couplings + (raw[:, S:] * scale).where(self.even_pairs, 0.0)
        if self.pseudo_readout is not None:  # pseudoscalar couplings (0o), odd under a reflection
            odd = last[len(self.layers[-1].a_irreps) + self.layers[-1].out_irreps.index((0, -1))][:, 0]
            couplings = couplings + (self.pseudo_readout(odd) * scale).where(self.odd_pairs, 0.0)
        return {keys.ATOMIC_DIABATIC: assemble(diagonal, couplings)}


def build_equivariant(
    spec: dict | None,
    species: Sequence[int],
    cutoff: float,
    charges: bool = False,
    charge_embedding: bool = False,
    **states,
) -> EquivariantPotential:
    """The model of a config's ``model`` section with ``type: equivariant`` (with a charge head;
    with total charge and spin as inputs; ``states``: n_states, couplings, epsilon)."""
    return EquivariantPotential(
        species, cutoff=cutoff, charges=charges, charge_embedding=charge_embedding,
        **equivariant_arguments(spec), **states,
    )  # fmt: skip
