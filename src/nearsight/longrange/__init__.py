"""Long-range terms that add per-atom energies to any short-range model.

:class:`Coulomb` gives the electrostatic energy ε_i = ½ q_i V_i of point charges: a direct
sum for molecules and clusters, Ewald or PME (through torch-pme) for periodic cells.
"""

from .coulomb import Coulomb

__all__ = ["Coulomb"]
