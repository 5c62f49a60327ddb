"""Nearsightedness analysis: is reference data local enough for a cutoff, and what does a model see?

Kohn's nearsightedness (PRL 76, 3168 (1996)): in a system with a gap, a local perturbation's effect
decays exponentially with distance; in a metal at zero electronic temperature only as a power law;
a finite electronic temperature restores exponential decay.  E = Σ_i ε_i with a cutoff r_c rests
on it.  This package measures it:

* :mod:`.force_response` -- K_ij = ‖∂F_i/∂R_j‖ of any reference (ASE calculator, ``nearsight.qm``
  oracle) by finite differences, its decay length and the cutoff a force tolerance needs;
* :mod:`.density_matrix` -- the decay of PySCF's density matrix in a Löwdin basis, molecules and
  k-point cells, with Fermi-Dirac smearing at an electronic temperature;
* :mod:`.model_sensitivity` -- the same K_ij of a nearsight model by autograd, zero beyond
  2 × layers × r_c;
* :mod:`.decay` -- exponential and power-law fits of a tail envelope;
* :mod:`.report` -- the summary (JSON), a text table and a plot.

(:mod:`nearsight.testing.locality` is different: assertions that a model is local.)
"""

from .decay import DecayFit, fit_decay, tail_envelope
from .density_matrix import DensityMatrixDecay, decay_from_scf, density_matrix_decay, lowdin_density_matrix
from .force_response import ForceResponse, force_response, forces_of
from .model_sensitivity import model_force_response, receptive_field
from .report import format_table, locality_summary, plot_locality, write_json

__all__ = [
    "DecayFit",
    "DensityMatrixDecay",
    "ForceResponse",
    "decay_from_scf",
    "density_matrix_decay",
    "fit_decay",
    "force_response",
    "forces_of",
    "format_table",
    "locality_summary",
    "lowdin_density_matrix",
    "model_force_response",
    "plot_locality",
    "receptive_field",
    "tail_envelope",
    "write_json",
]
