"""Long-range terms that add per-atom energies to any short-range model.

:class:`Coulomb` gives the electrostatic energy ε_i = ½ q_i V_i of point charges: a direct
sum for molecules and clusters, Ewald or PME (through torch-pme) for periodic cells; with
per-element widths the charges are Gaussians, and an exclusion radius leaves the nearest pairs to
the short-range model (:mod:`~nearsight.longrange.operator`).  :class:`ChargeEquilibration` finds
charges that minimise a QEq energy (4G-HDNNP) with the head's electronegativities, in a field.
:class:`Dispersion` gives the DFT-D3(BJ) dispersion energy per atom (through tad-dftd3), for
molecules and for cells periodic along any axes.  :class:`ZBLRepulsion` puts the universal nuclear
repulsion under the short-range model (a floor at short range).
:mod:`~nearsight.longrange.charge_fit` finds per-element starting charges for a charge head from
the training energies.  :mod:`~nearsight.longrange.model` sums them
with a short-range model into one total energy; :mod:`~nearsight.longrange.response` gives Born
effective charges and polarisabilities.
"""

from .coulomb import Coulomb
from .dispersion import Dispersion
from .qeq import ChargeEquilibration
from .repulsion import ZBLRepulsion

__all__ = ["ChargeEquilibration", "Coulomb", "Dispersion", "ZBLRepulsion"]
