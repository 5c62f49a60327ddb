"""Silicon's lattice constant, bulk modulus, elastic constants and phonons at Γ and X from a committee
trained on the mlearn data, against DFT-PBE (the data's own strained cells; Materials Project) and
experiment.

    nearsight train benchmarks/configs/si_properties.yaml --members 3
    python benchmarks/si_properties.py runs/si_committee/member_*/best_model.pt \
        [--json benchmarks/results/si_properties.json] [--plot docs/images/phonons_si.png]

Each member: the conventional 8-atom diamond cell relaxed (cell and positions, fmax 1e-4 eV/Å),
E(V) over ±3 % linear strain (Birch-Murnaghan: a0, B, B'), elastic constants with relaxed and
clamped ions (C11, C12, C44, C44⁰), phonons (phonopy, the supercell from the model's interaction
range) at Γ and X. The table gives the committee mean ± σ (ddof 0) and the references
(benchmarks/si_dft_reference.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from si_dft_reference import EXPERIMENT, MATERIALS_PROJECT, mlearn_reference  # noqa: E402

from nearsight.properties.common import as_calculators, committee_spread  # noqa: E402
from nearsight.properties.elastic import elastic_constants  # noqa: E402
from nearsight.properties.eos import equation_of_state  # noqa: E402
from nearsight.properties.phonons import committee_phonons, compute_phonons  # noqa: E402
from nearsight.properties.relax import relax  # noqa: E402

ROWS = [  # key, label, unit
    ("a0_A", "lattice constant a0", "Å"),
    ("B_GPa", "bulk modulus B (EOS)", "GPa"),
    ("B_elastic_GPa", "(C11 + 2 C12)/3", "GPa"),
    ("C11_GPa", "C11", "GPa"),
    ("C12_GPa", "C12", "GPa"),
    ("C44_GPa", "C44 (relaxed ions)", "GPa"),
    ("C44_clamped_GPa", "C44⁰ (clamped ions)", "GPa"),
    ("gamma_optical_THz", "Γ optical", "THz"),
    ("X_TA_THz", "X TA", "THz"),
    ("X_LA_THz", "X LA", "THz"),
    ("X_TO_THz", "X TO", "THz"),
]


def member_properties(calc, a_start: float = 5.47) -> tuple[dict[str, float], object]:
    """The properties of one model (module docstring) and its phonon result."""
    relaxed = relax(bulk("Si", "diamond", a=a_start, cubic=True), calc, fmax=1e-4, steps=500)
    relaxed.require_converged("diamond Si")
    atoms = relaxed.atoms
    eos = equation_of_state(atoms, calc, strain=0.03, n_points=9)
    relaxed_ion = elastic_constants(atoms, calc, relax_internal=True, fmax=1e-5)
    clamped = elastic_constants(atoms, calc, relax_internal=False)
    primitive = bulk("Si", "diamond", a=float(np.cbrt(atoms.cell.volume)))
    phonons = compute_phonons(primitive, calc)
    gamma = np.sort(phonons.frequencies_at([[0.0, 0.0, 0.0]])[0])
    x = np.sort(phonons.band_structure(npoints=3).at("X"))  # TA (×2), LA = LO, TO (×2)
    values = {
        "a0_A": float(np.cbrt(atoms.cell.volume)),
        "B_GPa": eos.bulk_modulus_GPa,
        "B_prime": eos.bulk_modulus_derivative,
        "B_elastic_GPa": (relaxed_ion.C11_GPa + 2 * relaxed_ion.C12_GPa) / 3,
        "C11_GPa": relaxed_ion.C11_GPa,
        "C12_GPa": relaxed_ion.C12_GPa,
        "C44_GPa": relaxed_ion.C44_GPa,
        "C44_clamped_GPa": clamped.C44_GPa,
        "gamma_optical_THz": float(gamma[3:].mean()),
        "X_TA_THz": float(x[:2].mean()),
        "X_LA_THz": float(x[2:4].mean()),
        "X_TO_THz": float(x[4:].mean()),
        "imaginary_modes": len(phonons.imaginary_modes()),
        "supercell": np.diag(phonons.supercell_matrix).tolist(),
    }
    return values, phonons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+")
    parser.add_argument("--json", default="benchmarks/results/si_properties.json")
    parser.add_argument("--plot", default="docs/images/phonons_si.png")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    calcs = as_calculators(args.models)
    members = []
    for path, calc in zip(args.models, calcs):
        values, _ = member_properties(calc)
        members.append(values)
        print(f"{path}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items() if isinstance(v, float)))
    spread = committee_spread(members)
    dft = mlearn_reference()
    atoms = bulk("Si", "diamond", a=float(np.mean([m["a0_A"] for m in members])))
    if len(calcs) > 1:
        committee_phonons(atoms, calcs, check_relaxed=False).plot(args.plot)
    else:
        compute_phonons(atoms, calcs[0], check_relaxed=False).plot(args.plot)

    print(
        f"\n{len(members)} member(s); mean ± σ  |  DFT-PBE (mlearn data)  |  Materials Project (PBE)  |  experiment"
    )
    rows = []
    for key, label, unit in ROWS:
        mean, std = spread[key]["mean"], spread[key]["std"]
        refs = [dft.get(key), MATERIALS_PROJECT.get(key), EXPERIMENT.get(key)]
        cells = ["—" if r is None else f"{r:.4g}" for r in refs]
        print(
            f"{label:>22} ({unit}): {mean:8.4g} ± {std:<7.2g} | {cells[0]:>7} | {cells[1]:>7} | {cells[2]:>7}"
        )
        rows.append({"key": key, "label": label, "unit": unit, "mean": mean, "std": std,
                     "dft_mlearn": refs[0], "materials_project": refs[1], "experiment": refs[2]})  # fmt: skip
    out = {
        "models": [os.fspath(m) for m in args.models],
        "members": members,
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"\n{args.json}, {args.plot} ({out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
