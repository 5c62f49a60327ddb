"""Properties computed with a potential through its ASE calculator: relaxation and the equation of
state, elastic constants, phonons (phonopy), molecular vibrations and IR intensities, and spectra
from MD; each for one model or as a committee's mean ± σ (:mod:`nearsight.properties.common`)."""

from .common import as_calculators, committee_spread, interaction_range, over_members

__all__ = ["as_calculators", "committee_spread", "interaction_range", "over_members"]
