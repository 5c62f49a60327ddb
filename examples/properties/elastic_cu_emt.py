"""Relaxation, equation of state and elastic constants of fcc copper with ASE's EMT potential.

    python examples/properties/elastic_cu_emt.py   # writes docs/images/eos_cu_emt.png

Any ASE calculator works the same way; for a nearsight model pass ``NearsightCalculator("model.pt")``
(or, for a committee, ``committee_elastic_constants(atoms, ["a.pt", "b.pt"], relax_first=True)``).
"""

from __future__ import annotations

from pathlib import Path

from ase.build import bulk
from ase.calculators.emt import EMT

from nearsight.properties.elastic import elastic_constants
from nearsight.properties.eos import equation_of_state
from nearsight.properties.relax import relax

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    calc = EMT()
    relaxed = relax(bulk("Cu", "fcc", a=3.65, cubic=True), calc, fmax=1e-5)
    relaxed.require_converged("fcc Cu")
    print(
        f"relaxed in {relaxed.n_steps} steps: a = {relaxed.lattice_parameters[0]:.5f} Å, "
        f"largest stress {relaxed.max_stress:.1e} eV/Å³"
    )

    eos = equation_of_state(relaxed.atoms, calc, strain=0.04, n_points=9)
    print(
        f"EOS ({eos.eos}): a0 = {eos.a0:.5f} Å, V0 = {eos.v0 / eos.n_atoms:.4f} Å³/atom, "
        f"B = {eos.bulk_modulus_GPa:.2f} GPa, B' = {eos.bulk_modulus_derivative:.3f}"
    )
    png = eos.plot(ROOT / "docs" / "images" / "eos_cu_emt.png")

    elastic = elastic_constants(relaxed.atoms, calc)
    print(elastic.table())
    k_elastic = (elastic.C11_GPa + 2 * elastic.C12_GPa) / 3
    print(f"B from the EOS {eos.bulk_modulus_GPa:.2f} GPa vs (C11 + 2 C12)/3 = {k_elastic:.2f} GPa")
    print(png)


if __name__ == "__main__":
    main()
