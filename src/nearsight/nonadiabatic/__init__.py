"""Several electronic states: a diabatic potential matrix V_d(R), its adiabatic energies, forces and
non-adiabatic couplings (issue 18).

:mod:`~nearsight.nonadiabatic.eigen` turns V_d into adiabatic energies with derivatives that stay
finite at a conical intersection (two states in closed form, more through an eigen-decomposition
with a broadened backward), :mod:`~nearsight.nonadiabatic.couplings` gives the derivative couplings
h_ij = u_iᵀ(∇V_d)u_j and d_ij = h_ij/(E_j − E_i) and keeps eigenvector signs continuous along a
path, :mod:`~nearsight.nonadiabatic.coordinate_model` learns diabatic (or, for comparison,
adiabatic) potentials of a few generalised coordinates, and :mod:`~nearsight.nonadiabatic.analytic` holds the analytic reference models (Tully's three
one-dimensional models and the two-dimensional conical intersection of Ferretti et al.).
"""

from .couplings import align_signs, derivative_couplings
from .eigen import adiabatic_energies, adiabatic_states

__all__ = ["adiabatic_energies", "adiabatic_states", "align_signs", "derivative_couplings"]
