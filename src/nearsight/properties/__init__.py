"""Properties computed with a potential through its ASE calculator: relaxation and the equation of
state, elastic constants, phonons (phonopy), molecular vibrations and IR intensities, and spectra
from MD; each for one model or as a committee's mean ± σ (:mod:`nearsight.properties.common`)."""

from .common import as_calculators, committee_spread, interaction_range, over_members
from .elastic import committee_elastic_constants, elastic_constants
from .eos import committee_equation_of_state, equation_of_state
from .phonons import committee_phonons, compute_phonons
from .relax import committee_relax, relax
from .spectra import ir_spectrum, spectrum_from_trajectory, vibrational_dos
from .vibrations import committee_vibrations, vibrations

__all__ = [
    "as_calculators",
    "committee_elastic_constants",
    "committee_equation_of_state",
    "committee_phonons",
    "committee_relax",
    "committee_spread",
    "committee_vibrations",
    "compute_phonons",
    "elastic_constants",
    "equation_of_state",
    "interaction_range",
    "ir_spectrum",
    "over_members",
    "relax",
    "spectrum_from_trajectory",
    "vibrational_dos",
    "vibrations",
]
