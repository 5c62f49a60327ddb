"""Free energies along collective variables: bias wrappers around any ASE calculator.

* :mod:`.colvars`: distance, angle, dihedral, coordination number, Cartesian position, with
  analytic gradients (minimum image in periodic cells) and strain derivatives;
* :mod:`.bias`: :class:`BiasedCalculator` (E + V(s), F - ∂V/∂R), :class:`HarmonicBias`,
  :class:`WellTemperedMetadynamics` (hills on an optional grid, atomic save/load);
* :mod:`.umbrella`: resumable umbrella windows (Langevin MD) and their MBAR profile (pymbar) with
  error bars and overlap diagnostics;
* :mod:`.metadynamics`: resumable well-tempered metadynamics, F from the bias and by
  Tiwary-Parrinello reweighting;
* :mod:`.toy_surfaces`: a double well and the Müller-Brown surface with exact free energies;
* :mod:`.plots`: profiles with error bars, window histograms, hills.

Several *walkers* (equivalent CVs of independent copies of a system in one structure) may share
a bias; each MD step then samples every copy.
"""

from __future__ import annotations

from .bias import Bias, BiasedCalculator, HarmonicBias, WellTemperedMetadynamics
from .colvars import (
    Angle,
    CollectiveVariable,
    CoordinationNumber,
    CVValue,
    Dihedral,
    Distance,
    Position,
    cv_from_dict,
)
from .metadynamics import MetadynamicsRun, bias_profile, reweighted_profile, run_metadynamics
from .umbrella import FreeEnergyProfile, UmbrellaWindow, load_windows, mbar_profile, run_umbrella

__all__ = [
    "Angle",
    "Bias",
    "BiasedCalculator",
    "CVValue",
    "CollectiveVariable",
    "CoordinationNumber",
    "Dihedral",
    "Distance",
    "FreeEnergyProfile",
    "HarmonicBias",
    "MetadynamicsRun",
    "Position",
    "UmbrellaWindow",
    "WellTemperedMetadynamics",
    "bias_profile",
    "cv_from_dict",
    "load_windows",
    "mbar_profile",
    "reweighted_profile",
    "run_metadynamics",
    "run_umbrella",
]
