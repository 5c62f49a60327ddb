"""Field names of the graph dictionary, each declared once with its shape and unit.

A *graph* is a ``dict[str, torch.Tensor]`` describing one or more structures
(a batch).  Model code reads and writes only these keys.  Shapes use
``n_atoms`` (all atoms of the batch), ``n_edges`` (directed neighbour pairs),
``n_graphs`` (structures in the batch); a field is indexed first by the entity
it belongs to (``per``: atom, edge or graph), then by its own ``shape``, where a
name such as ``"n_states"`` stands for a size fixed by the data or the model.

Every model output can also be a label: the reference value sits under
``label_key(name)`` (``"ref_" + name``) with the same shape, and ``mask_key(name)``
(``"has_" + name``, ``[n_graphs]`` bool) says which structures carry it.  Energy,
forces and stress are read by every reader; any other declared output (charges,
dipoles, per-state energies, ...) is read where ``data.extra_labels`` names it.

``ForceField`` uses two declarations: ``sum_to`` (per-atom contributions summed per
structure, e.g. atomic energies -> energy) and ``forces`` (the field that holds
−∂/∂R of this one: energy -> forces, per-state energies -> per-state forces).

New fields (a new output of a model, a label read for a new loss term) are declared
with :func:`declare`, here for the built-in ones or in the module that adds them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """One key of the graph dict: ``[n_<per>, *shape]`` in ``unit``."""

    name: str
    per: str  # "atom" | "edge" | "graph"
    shape: tuple[int | str, ...]  # trailing dimensions; a str is a size set by the data/model
    unit: str
    dtype: str = "float"  # "float" | "int" | "bool"
    sum_to: str | None = None  # per-atom field summed per structure into this per-graph field
    forces: str | None = None  # the field holding −∂(this)/∂R (energy-like outputs)

    def describe(self) -> str:
        dims = [f"n_{self.per}s" if self.per != "graph" else "n_graphs", *map(str, self.shape)]
        return f"{self.name} [{', '.join(dims)}] {self.dtype}, {self.unit}"


FIELDS: dict[str, Field] = {}
"""Every declared field by name."""


def declare(
    name: str,
    per: str,
    shape: tuple[int | str, ...] = (),
    unit: str = "1",
    *,
    dtype: str = "float",
    sum_to: str | None = None,
    forces: str | None = None,
) -> str:
    """Declare a field; returns its name.  Declaring the same name twice differently raises."""
    if per not in ("atom", "edge", "graph"):
        raise ValueError(f"field {name!r}: per = {per!r} must be 'atom', 'edge' or 'graph'")
    field = Field(name, per, tuple(shape), unit, dtype, sum_to, forces)
    if name in FIELDS and FIELDS[name] != field:
        raise ValueError(f"field {name!r} is already declared as {FIELDS[name]}, not {field}")
    FIELDS[name] = field
    return name


def field(name: str) -> Field:
    """The declaration of ``name``; an undeclared name raises naming the declared ones."""
    try:
        return FIELDS[name]
    except KeyError:
        raise KeyError(f"undeclared field {name!r}; declared: {sorted(FIELDS)}") from None


def label_key(name: str) -> str:
    """Batch key of the reference value of output ``name`` (same shape as the output)."""
    return "ref_" + name


def mask_key(name: str) -> str:
    """Batch key of the ``[n_graphs]`` bool mask: structures that carry the label of ``name``."""
    return "has_" + name


# ----------------------------------------------------------------- inputs
POSITIONS = declare("positions", "atom", (3,), "Å")  # [n_atoms, 3] float, Å (Cartesian)
ATOMIC_NUMBERS = declare("atomic_numbers", "atom", (), "1", dtype="int")  # [n_atoms] int64
# [n_graphs, 3, 3] float, Å, rows are lattice vectors (zeros if no cell)
CELL = declare("cell", "graph", (3, 3), "Å")
PBC = declare("pbc", "graph", (3,), "1", dtype="bool")  # [n_graphs, 3] bool
BATCH = declare("batch", "atom", (), "1", dtype="int")  # [n_atoms] int64, graph index of each atom
N_ATOMS = declare("n_atoms", "graph", (), "1", dtype="int")  # [n_graphs] int64
EDGE_INDEX = "edge_index"  # [2, n_edges] int64, row 0 = centre i, row 1 = neighbour j
CELL_SHIFTS = declare("cell_shifts", "edge", (3,), "1")  # [n_edges, 3] float, integer lattice shifts S_ij
#   r_ij = R_j - R_i + S_ij @ cell[batch[i]]
# [n_graphs] float, e: total charge Q of each structure (optional; 0 when absent)
TOTAL_CHARGE = declare("total_charge", "graph", (), "e")
# [n_graphs, 3] float, V/Å: uniform external electric field E on each structure (optional; 0 when
# absent); adds −μ·E to the energy of models with charges and polarises QEq charges
EXTERNAL_FIELD = declare("external_field", "graph", (3,), "V/Å")
# [n_graphs] float: spin multiplicity M = 2S + 1 of each structure (1 singlet, 2 doublet, ...;
# optional, 1 when absent; an input of charge-aware models: nearsight.models.electronic)
SPIN_MULTIPLICITY = declare("spin_multiplicity", "graph", (), "1")
# [n_graphs] int64, readout head of each structure (multi-head models; optional)
HEAD = declare("head", "graph", (), "1", dtype="int")

# ------------------------------------------------------------ derived inputs
EDGE_VECTORS = declare("edge_vectors", "edge", (3,), "Å")  # [n_edges, 3] float, Å, r_ij (computed in torch)
EDGE_LENGTHS = declare("edge_lengths", "edge", (), "Å")  # [n_edges] float, Å
# [n_slots] (values unused): n_slots >= the largest number of edges of one centre; given to a traced
# model (nearsight.models.aoti) as a size, so its padded neighbour lists have a shape export can trace
NEIGHBOUR_SLOTS = "neighbour_slots"
# "layer_centres_<t>" [n_t] int64, one per message-passing layer t (optional): the atoms layer t
# updates (each layer's set inside the one before; the last layer's are the atoms whose energies are
# wanted, the others get energy 0); edges are needed only around layer 0's. The LAMMPS plugin gives
# them so that ghosts far from its own atoms are not updated (nearsight.models.receptive)
LAYER_CENTRES = "layer_centres"
# "layer_chunks_<t>" [k_t] (values unused), one per layer, with LAYER_CENTRES, to a traced model only:
# layer t runs in k_t chunks of S atoms (k_t·S >= n_t; S fixed by the model, nearsight.models.chunked)
LAYER_CHUNKS = "layer_chunks"

# ----------------------------------------------------------------- outputs
ENERGY = "energy"
FORCES = "forces"
ATOMIC_ENERGIES = declare("atomic_energies", "atom", (), "eV", sum_to=ENERGY)  # [n_atoms] float, eV
declare(ENERGY, "graph", (), "eV", forces=FORCES)  # [n_graphs] float, eV
declare(FORCES, "atom", (3,), "eV/Å")  # [n_atoms, 3] float, eV/Å
VIRIAL = declare("virial", "graph", (3, 3), "eV")  # [n_graphs, 3, 3] float, eV  (W = -dE/dε)
# [n_graphs, 3, 3] float, eV/Å³ (ASE sign: σ = (1/V) dE/dε)
STRESS = declare("stress", "graph", (3, 3), "eV/Å^3")
CHARGES = declare("charges", "atom", (), "e")  # [n_atoms] float, e (partial charges)
DIPOLE = declare("dipole", "graph", (3,), "e*Å")  # [n_graphs, 3] float, e·Å (dipole moment)
# [n_atoms] float: descriptor components of each atom outside the range seen in training
# (per element); 0 inside the training data, > 0 where the model extrapolates
EXTRAPOLATION = declare("extrapolation", "atom", (), "1")
STATE_ENERGIES = "state_energies"
STATE_FORCES = "state_forces"
declare(STATE_ENERGIES, "graph", ("n_states",), "eV", forces=STATE_FORCES)  # [n_graphs, n_states] float, eV
declare(STATE_FORCES, "atom", ("n_states", 3), "eV/Å")  # [n_atoms, n_states, 3] float, eV/Å
# diabatic models (nearsight.nonadiabatic): per-atom contributions to the symmetric diabatic
# matrix V_d, summed per structure; its eigenvalues are STATE_ENERGIES (ascending, ground state
# first, and ENERGY = STATE_ENERGIES[:, 0]), their forces STATE_FORCES
DIABATIC_MATRIX = "diabatic_matrix"
# [n_atoms, n_states, n_states] float, eV
ATOMIC_DIABATIC = declare("atomic_diabatic", "atom", ("n_states", "n_states"), "eV", sum_to=DIABATIC_MATRIX)
declare(DIABATIC_MATRIX, "graph", ("n_states", "n_states"), "eV")  # [n_graphs, n_states, n_states] float, eV
# [n_atoms, n_pairs, 3] float, eV/Å: h_ij = u_iᵀ(∇V_d)u_j = ⟨ψ_i|∇H|ψ_j⟩ of the adiabatic states
# i < j, pairs in the order (0,1), (0,2), ..., (1,2), ...; the sign of each pair's vector is arbitrary
# (that of the states); the non-adiabatic coupling vector is d_ij = h_ij / (E_j − E_i)
STATE_COUPLINGS = declare("state_couplings", "atom", ("n_pairs", 3), "eV/Å")

# ------------------------------------------------------------------ labels
REF_ENERGY = label_key(ENERGY)  # [n_graphs] float, eV (total energy of the structure)
REF_FORCES = label_key(FORCES)  # [n_atoms, 3] float, eV/Å
REF_STRESS = label_key(STRESS)  # [n_graphs, 3, 3] float, eV/Å³ (ASE sign)
HAS_ENERGY = mask_key(ENERGY)  # [n_graphs] bool, label present
HAS_FORCES = mask_key(FORCES)  # [n_graphs] bool
HAS_STRESS = mask_key(STRESS)  # [n_graphs] bool
WEIGHT = declare("weight", "graph", (), "1")  # [n_graphs] float, per-frame loss weight

INPUT_KEYS = (POSITIONS, ATOMIC_NUMBERS, CELL, PBC, BATCH, N_ATOMS, EDGE_INDEX, CELL_SHIFTS)
LABEL_KEYS = (REF_ENERGY, REF_FORCES, REF_STRESS, HAS_ENERGY, HAS_FORCES, HAS_STRESS, WEIGHT)
