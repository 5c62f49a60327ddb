"""Long-range terms that add per-atom energies to any short-range model.

:class:`Coulomb` gives the electrostatic energy ε_i = ½ q_i V_i of point charges: a direct
sum for molecules and clusters, Ewald or PME (through torch-pme) for periodic cells.
:class:`Dispersion` gives the DFT-D3(BJ) dispersion energy per atom (through tad-dftd3), for
molecules and for cells periodic along any axes.  :mod:`~nearsight.longrange.model` sums them
with a short-range model into one total energy; :mod:`~nearsight.longrange.response` gives Born
effective charges.
"""

from .coulomb import Coulomb
from .dispersion import Dispersion

__all__ = ["Coulomb", "Dispersion"]
