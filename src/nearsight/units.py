"""The unit system: eV, Å, amu, K, elementary charge; time through ``ase.units.fs``.

Conversion factors are taken from ASE so that nearsight agrees with every
ASE calculator and integrator.
"""

from __future__ import annotations

from ase import units as _ase

ENERGY = "eV"
LENGTH = "Å"
MASS = "amu"
TEMPERATURE = "K"
CHARGE = "e"
FORCE = "eV/Å"
STRESS = "eV/Å^3"

UNITS = {
    "energy": ENERGY,
    "length": LENGTH,
    "mass": MASS,
    "temperature": TEMPERATURE,
    "charge": CHARGE,
    "force": FORCE,
    "stress": STRESS,
}

fs = _ase.fs
GPa = _ase.GPa  # eV/Å³ per GPa
KBAR = 0.1 * _ase.GPa  # eV/Å³ per kbar (VASP's stress unit)
kB = _ase.kB  # eV/K
