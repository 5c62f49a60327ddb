"""ML/MM: a nearsight region inside a classical (MM) environment.

* :mod:`~nearsight.mlmm.openmm_embedding`: :func:`ml_mm_system`, mechanical embedding in an OpenMM
  force field through openmmml's ``MLPotential("ase")`` (an ``openmm.PythonForce``, no openmmtorch);
* :mod:`~nearsight.mlmm.ase_embedding`: :func:`simple_qmmm` (ASE's ``SimpleQMMM``, mechanical) and
  :func:`eiqmmm` (ASE's ``EIQMMM``, electrostatic embedding of the model's charges,
  :mod:`~nearsight.mlmm.point_charges`), e.g. with ASE's TIP3P water.

Mechanical embedding: E = E_MM(all) − E_MM(ML region) + E_ML(ML region).  The OpenMM names are
imported on first use, so the ASE routes do not need OpenMM.
"""

from __future__ import annotations

from .ase_embedding import TIP3PLennardJones, eiqmmm, simple_qmmm
from .point_charges import EmbeddedNearsightCalculator
from .region import check_region

_OPENMM = ("MLMMSystem", "evaluate", "ml_mm_system", "topology_from_atoms")

__all__ = [
    "EmbeddedNearsightCalculator",
    "MLMMSystem",
    "TIP3PLennardJones",
    "check_region",
    "eiqmmm",
    "evaluate",
    "ml_mm_system",
    "simple_qmmm",
    "topology_from_atoms",
]


def __getattr__(name: str) -> object:
    if name in _OPENMM:
        from . import openmm_embedding

        return getattr(openmm_embedding, name)
    raise AttributeError(f"module 'nearsight.mlmm' has no attribute {name!r}")
