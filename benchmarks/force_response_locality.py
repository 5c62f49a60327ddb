"""How far does the PBE/def2-SVP force on an atom reach?  The cutoff the reference itself implies.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/force_response_locality.py [--centres 0 5] [--model M.pt]

The examples learn rMD17 ethanol (PBE/def2-SVP) with r_c = 5 Å, but ethanol is only ~4 Å across,
so it cannot tell whether 5 Å is enough.  We take 1-pentanol, CH3(CH2)4OH (18 atoms, ~8.5 Å end to
end), at the same level of theory: the same chemistry (sp3 carbon, a hydroxyl group) stretched so
that pairs reach well past 5 Å, small enough for a few minutes of CPU (a gradient of 1-octanol,
27 atoms, took five minutes on the shared machine).  The geometry is ideal all-trans (standard bond
lengths, tetrahedral angles), not relaxed: the Hessian's locality, not its eigenvalues, is measured.

K_ij = ‖∂F_i/∂R_j‖ by central differences (δ = 0.01 Å) of analytic PBE/def2-SVP forces (PySCF RKS
with the integration grid's response, density fitting of the Coulomb term with def2-universal-jkfit,
SCF to 1e-10 Hartree restarted from the undisplaced density) for the chosen centres (default: the
methyl carbon at one end and the hydroxyl oxygen at the other), then the cutoffs for force
tolerances of 0.01 and 0.05 eV/Å with displacements of 0.1 Å.  Writes
benchmarks/results/force_response_locality.json and docs/images/force_response_locality.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase import units as ase_units

from nearsight.locality import (
    ForceResponse,
    force_response,
    format_table,
    locality_summary,
    model_force_response,
    plot_locality,
    receptive_field,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
TETRAHEDRAL = np.deg2rad(109.47)


def n_alcohol(n_carbon: int) -> Atoms:
    """All-trans CH3(CH2)_{n−1}OH: zigzag heavy-atom backbone in the xy plane (C–C 1.53, C–O 1.43,
    C–H 1.09, O–H 0.96 Å, tetrahedral angles), the O–H trans to the last C–C bond."""
    heavy = ["C"] * n_carbon + ["O"]
    lengths = [1.53] * (n_carbon - 1) + [1.43]
    half = TETRAHEDRAL / 2
    backbone = [np.zeros(3)]
    for k, b in enumerate(lengths):
        backbone.append(
            backbone[-1] + b * np.array([np.sin(half), (1 if k % 2 == 0 else -1) * np.cos(half), 0])
        )
    backbone.append(
        backbone[-1] + 0.96 * np.array([np.sin(half), (1 if len(lengths) % 2 == 0 else -1) * np.cos(half), 0])
    )
    symbols, positions = heavy + ["H"], list(backbone)
    z = np.array([0.0, 0.0, 1.0])
    for k in range(n_carbon):
        neighbours = [backbone[m] for m in (k - 1, k + 1) if 0 <= m]
        bisector = -sum((p - backbone[k]) / np.linalg.norm(p - backbone[k]) for p in neighbours)
        bisector /= np.linalg.norm(bisector)
        if k == 0:  # methyl: one H in the plane continuing the zigzag, two above and below it
            bond = (backbone[1] - backbone[0]) / np.linalg.norm(backbone[1] - backbone[0])
            for v in (_mirror(bond), _methyl(bond, _mirror(bond), 1), _methyl(bond, _mirror(bond), -1)):
                positions.append(backbone[0] + 1.09 * v)
                symbols.append("H")
            continue
        for s in (1, -1):  # CH2: two H out of the plane, along the bisector of the open angle
            v = np.cos(TETRAHEDRAL / 2) * bisector + s * np.sin(TETRAHEDRAL / 2) * z
            positions.append(backbone[k] + 1.09 * v)
            symbols.append("H")
    atoms = Atoms(symbols, positions=positions)
    atoms.center(vacuum=5.0)
    return atoms


def _mirror(bond: np.ndarray) -> np.ndarray:
    """The in-plane direction at the first carbon that continues the zigzag (trans H)."""
    return np.array([-bond[0], bond[1], 0.0])


def _methyl(bond: np.ndarray, trans: np.ndarray, sign: int) -> np.ndarray:
    """Unit vector of an out-of-plane methyl H: tetrahedral to the C–C bond and to the trans H."""
    a, b = bond, trans  # unit vectors; the H makes 109.47° with both
    c = np.cos(TETRAHEDRAL)
    m = np.linalg.solve(np.array([a[:2], b[:2]]), [c, c])  # in-plane part
    return np.array([m[0], m[1], sign * np.sqrt(max(0.0, 1.0 - m @ m))])


class PBEdef2SVP:
    """PBE/def2-SVP forces (eV/Å) of a molecule from PySCF, restarting each SCF from the last density."""

    name = "PySCF RKS(PBE)/def2-SVP (RI-J)"

    def __init__(self, conv_tol: float = 1e-10) -> None:
        self.conv_tol = conv_tol
        self.dm = None
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, atoms: Atoms) -> np.ndarray:
        from pyscf import dft, gto

        start = time.perf_counter()
        mol = gto.M(
            atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
            basis="def2-svp", unit="Angstrom", verbose=0, max_memory=4000,
        )  # fmt: skip
        mf = dft.RKS(mol).density_fit(auxbasis="def2-universal-jkfit")
        mf.xc, mf.conv_tol = "pbe", self.conv_tol
        mf.kernel(dm0=self.dm)
        if not mf.converged:
            raise ValueError(f"{self.name}: SCF of {atoms.get_chemical_formula()} did not converge")
        self.dm = mf.make_rdm1()
        grad = mf.nuc_grad_method()
        grad.grid_response = True  # forces are the exact derivatives of the energy on a moving grid
        forces = -grad.kernel() * ase_units.Hartree / ase_units.Bohr
        self.calls += 1
        self.seconds += time.perf_counter() - start
        return forces


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--carbons", type=int, default=5, help="chain length (default 5: 1-pentanol)")
    p.add_argument("--centres", type=int, nargs="+", default=None, help="default: methyl C and hydroxyl O")
    p.add_argument("--model", default=None, help="also a nearsight model's response (H, C, O)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "force_response_locality.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "images" / "force_response_locality.png"))
    p.add_argument("--replot", action="store_true", help="only redraw the plot from the JSON")
    args = p.parse_args()
    if args.replot:
        replot(args.out, args.plot)
        return
    atoms = n_alcohol(args.carbons)
    centres = args.centres if args.centres is not None else [0, args.carbons]  # methyl C, hydroxyl O
    reference = PBEdef2SVP()
    start = time.perf_counter()
    reference(atoms)  # the undisplaced density: every displaced SCF starts from it
    ref = force_response(atoms, reference, centres=centres, delta=0.01, progress=print)
    wall = time.perf_counter() - start
    model = ranges = None
    if args.model:
        model = model_force_response(atoms, args.model, centres=centres)
        from nearsight.models.io import load_model

        ranges = receptive_field(load_model(args.model))
    tolerances = (0.01, 0.05)
    summary = locality_summary(ref, model, tolerances=tolerances, amplitude_A=0.1, kind="sum",
                               receptive=ranges, structure=f"all-trans {atoms.get_chemical_formula()} (1-alkanol)")  # fmt: skip
    summary["max_cutoff"] = {  # the one-atom criterion beside the all-atoms bound
        str(t): ref.cutoff_for(t, 0.1, "max") for t in tolerances
    }
    summary["examples_cutoff_A"] = 5.0
    summary["neglected_at_5A_eV_per_A"] = {"sum": ref.neglected_force(5.0, 0.1, "sum"),
                                           "max": ref.neglected_force(5.0, 0.1, "max")}  # fmt: skip
    summary["cost"] = {"force_calculations": reference.calls, "wall_s": wall}
    summary["geometry"] = {"symbols": atoms.get_chemical_symbols(), "positions_A": atoms.positions.tolist()}
    write_json(args.out, summary)
    _plot(args.plot, ref, model, summary)
    print(format_table(summary))
    print(
        f"one-atom (max) criterion: {summary['max_cutoff']}; neglected at 5 Å: {summary['neglected_at_5A_eV_per_A']}"
    )
    print(f"{reference.calls} force calculations, {wall:.0f} s; noise {ref.noise:.2g} eV/Å²")
    print(args.out)


def replot(json_path: str, plot_path: str) -> None:
    """Redraw the plot from a finished run's JSON."""
    import json

    summary = json.loads(Path(json_path).read_text())
    ref = ForceResponse.from_dict(summary["reference"])
    model = ForceResponse.from_dict(summary["model"]) if "model" in summary else None
    _plot(plot_path, ref, model, summary)


def _plot(path: str, ref: ForceResponse, model: ForceResponse | None, summary: dict) -> None:
    cutoffs = {f"r_c({c['tolerance_eV_per_A']:g} eV/Å) = {c['cutoff_A']:.2f} Å": c["cutoff_A"]
               for c in summary["reference"]["cutoffs"]}  # fmt: skip
    cutoffs["examples' r_c = 5 Å"] = 5.0
    ranges = summary.get("model", {}).get("ranges_A")
    plot_locality(path, ref, model, (), cutoffs, ranges, title=f"{ref.formula} PBE/def2-SVP force response")


if __name__ == "__main__":
    main()
