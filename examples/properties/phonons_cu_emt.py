"""Phonons of fcc copper with ASE's EMT potential: bands, DOS and thermal properties.

    python examples/properties/phonons_cu_emt.py   # writes docs/images/phonons_cu_emt.png

Any ASE calculator works the same way; for a nearsight model pass the model file instead of EMT()
(``compute_phonons(atoms, "model.pt")``), and the supercell is then chosen from its cutoff.
"""

from __future__ import annotations

from pathlib import Path

from ase.build import bulk
from ase.calculators.emt import EMT
from scipy.optimize import minimize_scalar

from nearsight.properties.phonons import THZ_TO_CM1, compute_phonons

ROOT = Path(__file__).resolve().parents[2]


def emt_lattice_constant() -> float:
    """The fcc lattice constant (Å) at EMT's energy minimum."""

    def energy(a: float) -> float:
        atoms = bulk("Cu", "fcc", a=a)
        atoms.calc = EMT()
        return atoms.get_potential_energy()

    return float(minimize_scalar(energy, bracket=(3.5, 3.6, 3.7), tol=1e-8).x)


def main() -> None:
    a = emt_lattice_constant()
    atoms = bulk("Cu", "fcc", a=a)
    # EMT has no nearsight cutoff to choose the supercell from: 5×5×5 primitive cells (widths 10.4 Å)
    result = compute_phonons(atoms, EMT(), supercell=5)
    print(f"EMT copper, a = {a:.4f} Å, supercell 5×5×5 ({5**3} atoms)")
    bands = result.band_structure()
    for label in ("X", "L", "W"):
        nu = bands.at(label)
        print(f"  {label}: " + ", ".join(f"{v:.3f} THz ({v * THZ_TO_CM1:.0f} cm⁻¹)" for v in nu))
    thermal = result.thermal_properties([100.0, 300.0, 1000.0])
    for k, t in enumerate(thermal["temperature_K"]):
        print(
            f"  {t:6.0f} K: F = {thermal['free_energy_eV'][k]:+.4f} eV, "
            f"S = {thermal['entropy_eV_per_K'][k] * 1e3:.4f} meV/K, "
            f"C_V = {thermal['heat_capacity_eV_per_K'][k] * 1e3:.4f} meV/K (per atom)"
        )
    print(f"  imaginary modes: {len(result.imaginary_modes())}")
    png = result.plot(ROOT / "docs" / "images" / "phonons_cu_emt.png", title="fcc Cu, EMT (5×5×5 supercell)")
    print(png)


if __name__ == "__main__":
    main()
