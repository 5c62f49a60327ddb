"""Field names of the graph dictionary, one constant per field with its shape.

A *graph* is a ``dict[str, torch.Tensor]`` describing one or more structures
(a batch).  Model code reads and writes only these keys.  Shapes use
``n_atoms`` (all atoms of the batch), ``n_edges`` (directed neighbour pairs),
``n_graphs`` (structures in the batch).
"""

from __future__ import annotations

# ----------------------------------------------------------------- inputs
POSITIONS = "positions"  # [n_atoms, 3] float, Å (Cartesian)
ATOMIC_NUMBERS = "atomic_numbers"  # [n_atoms] int64
CELL = "cell"  # [n_graphs, 3, 3] float, Å, rows are lattice vectors (zeros if no cell)
PBC = "pbc"  # [n_graphs, 3] bool
BATCH = "batch"  # [n_atoms] int64, graph index of each atom
N_ATOMS = "n_atoms"  # [n_graphs] int64
EDGE_INDEX = "edge_index"  # [2, n_edges] int64, row 0 = centre i, row 1 = neighbour j
CELL_SHIFTS = "cell_shifts"  # [n_edges, 3] float, integer lattice shifts S_ij
#   r_ij = R_j - R_i + S_ij @ cell[batch[i]]

# ------------------------------------------------------------ derived inputs
EDGE_VECTORS = "edge_vectors"  # [n_edges, 3] float, Å, r_ij (computed in torch)
EDGE_LENGTHS = "edge_lengths"  # [n_edges] float, Å

# ----------------------------------------------------------------- outputs
ATOMIC_ENERGIES = "atomic_energies"  # [n_atoms] float, eV
ENERGY = "energy"  # [n_graphs] float, eV
FORCES = "forces"  # [n_atoms, 3] float, eV/Å
VIRIAL = "virial"  # [n_graphs, 3, 3] float, eV  (W = -dE/dε)
STRESS = "stress"  # [n_graphs, 3, 3] float, eV/Å³ (ASE sign: σ = (1/V) dE/dε)

# ------------------------------------------------------------------ labels
REF_ENERGY = "ref_energy"  # [n_graphs] float, eV (total energy of the structure)
REF_FORCES = "ref_forces"  # [n_atoms, 3] float, eV/Å
REF_STRESS = "ref_stress"  # [n_graphs, 3, 3] float, eV/Å³ (ASE sign)
HAS_ENERGY = "has_energy"  # [n_graphs] bool, label present
HAS_FORCES = "has_forces"  # [n_graphs] bool
HAS_STRESS = "has_stress"  # [n_graphs] bool
WEIGHT = "weight"  # [n_graphs] float, per-frame loss weight
HEAD = "head"  # [n_graphs] int64, readout head of each structure (multi-head models; optional)

INPUT_KEYS = (POSITIONS, ATOMIC_NUMBERS, CELL, PBC, BATCH, N_ATOMS, EDGE_INDEX, CELL_SHIFTS)
LABEL_KEYS = (REF_ENERGY, REF_FORCES, REF_STRESS, HAS_ENERGY, HAS_FORCES, HAS_STRESS, WEIGHT)
