"""``nearsight relax``, ``nearsight eos``, ``nearsight elastic``: crystal properties of a model.

    nearsight relax STRUCTURE MODEL [MODEL ...] [--fmax 1e-3] [--no-cell] [--hydrostatic]
                    [--pressure-GPa P] [--steps 500] [--optimizer BFGS] [--output relaxed.extxyz]
    nearsight eos STRUCTURE MODEL [MODEL ...] [--strain 0.04] [--points 9] [--eos birchmurnaghan]
                  [--output-dir DIR]                     # DIR/eos.json, DIR/eos.png
    nearsight elastic STRUCTURE MODEL [MODEL ...] [--delta 1e-3] [--clamped-ion] [--relax]
                      [--output-dir DIR]                 # DIR/elastic.json

Several models make a committee: each member computes the property (``relax`` writes one relaxed
frame per member) and the output gives each member's numbers and the committee's mean ± σ. A
relaxation that does not converge writes its last structure and exits with an error naming the step
limit and fmax; ``elastic`` refuses a structure that is not relaxed (run ``nearsight relax`` first,
or pass ``--relax``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def relax_command(args: argparse.Namespace) -> int:
    import ase.io
    from ase.units import GPa

    from ..properties.relax import committee, relax

    atoms = _read_structure(args.structure, args.index, "relax")
    result = committee(
        relax,
        atoms,
        args.model,
        dtype=args.dtype,
        device=args.device,
        fmax=args.fmax,
        cell=not args.no_cell,
        hydrostatic=args.hydrostatic,
        pressure_GPa=args.pressure_GPa,
        steps=args.steps,
        optimizer=args.optimizer,
        where=f"{args.structure} (frame {args.index})",
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.tmp{output.suffix}")  # same extension: same format
    ase.io.write(tmp, [m.atoms for m in result.members], format=args.output_format)
    tmp.replace(output)
    for name, m in zip(args.model, result.members):
        line = f"{name}: E = {m.energy:.6f} eV, {m.n_steps} steps, max force {m.max_force:.2g} eV/Å"
        if m.cell_relaxed:
            a, b, c, alpha, beta, gamma = m.lattice_parameters
            line += (
                f", V = {m.volume:.4f} Å³, a b c = {a:.5f} {b:.5f} {c:.5f} Å, "
                f"α β γ = {alpha:.3f} {beta:.3f} {gamma:.3f}°, max stress {m.max_stress / GPa:.2g} GPa"
            )
        print(line)
    if len(result.members) > 1 and not args.no_cell:
        print("committee: " + ", ".join(_pm(result, k, f) for k, f in (("volume", ".4f"), ("energy", ".6f"))))
    print(output)
    for k, m in enumerate(result.members):
        where = f"{args.structure} (frame {args.index}) with {args.model[k]}"
        try:
            m.require_converged(where)
        except ValueError as exc:
            raise ValueError(f"{exc}; its last structure is frame {k} of {output}") from None
    return 0


def eos_command(args: argparse.Namespace) -> int:
    from ..properties.eos import committee_equation_of_state, plot_eos

    atoms = _read_structure(args.structure, args.index, "eos")
    result = committee_equation_of_state(
        atoms,
        args.model,
        dtype=args.dtype,
        device=args.device,
        strain=args.strain,
        n_points=args.points,
        eos=args.eos,
        relax_internal=not args.no_relax_internal,
        fmax=args.fmax,
        where=f"{args.structure} (frame {args.index})",
    )
    out = Path(args.output_dir)
    units = {
        "v0": "Å³ (cell)",
        "e0": "eV (cell)",
        "bulk_modulus_GPa": "GPa",
        "a0": "Å",
        "lattice_parameters": "a b c (Å), α β γ (°)",
    }
    path = _write_json(out / "eos.json", _report(args, result, units))
    labels = [Path(str(m)).name for m in args.model] if len(args.model) > 1 else None
    png = plot_eos(result.members, out / "eos.png", labels=labels)
    keys = (
        ("a0", ".5f"),
        ("v0_per_atom", ".4f"),
        ("e0_per_atom", ".6f"),
        ("bulk_modulus_GPa", ".2f"),
        ("bulk_modulus_derivative", ".3f"),
    )
    print(
        f"{args.eos} fit of {args.points} volumes (linear strain ±{args.strain:g}), "
        f"{len(args.model)} model(s):"
    )
    print("  " + ", ".join(_pm(result, k, f) for k, f in keys))
    print("  (a0 Å, V0 Å³/atom, E0 eV/atom, B GPa, B')")
    print(path)
    print(png)
    return 0


def elastic_command(args: argparse.Namespace) -> int:
    from ..properties.elastic import committee_elastic_constants

    atoms = _read_structure(args.structure, args.index, "elastic")
    result = committee_elastic_constants(
        atoms,
        args.model,
        dtype=args.dtype,
        device=args.device,
        delta=args.delta,
        n_steps=args.points,
        relax_internal=not args.clamped_ion,
        fmax=args.fmax,
        symmetry=args.symmetry,
        relax_first=args.relax,
        where=f"{args.structure} (frame {args.index})",
    )
    units = {"C_GPa": "GPa, Voigt order xx yy zz yz xz xy (engineering shear strains)", "moduli": "GPa"}
    path = _write_json(Path(args.output_dir) / "elastic.json", _report(args, result, units))
    if len(result.members) == 1:
        print(result.members[0].table())
    else:
        mean, std = result.mean("C_GPa"), result.std("C_GPa")
        print(f"C_ij (GPa), committee of {len(result.members)}: mean ± σ")
        for row_m, row_s in zip(mean, std):
            print("  " + " ".join(f"{m:8.2f}±{s:<5.2f}" for m, s in zip(row_m, row_s)))
        keys = [k for k in ("C11_GPa", "C12_GPa", "C44_GPa") if _finite(result.mean(k))]
        keys += ["K_hill_GPa", "G_hill_GPa"]
        print("  " + ", ".join(_pm(result, k, ".2f") for k in keys))
        stable = [m.stable for m in result.members]
        print(f"  Born stable: {sum(stable)} of {len(stable)} members")
    print(path)
    return 0


def _pm(result: Any, key: str, fmt: str) -> str:
    """``key = mean ± σ`` (or ``key = value`` for one member)."""
    mean, std = result.mean(key), result.std(key)
    if len(result.members) == 1:
        return f"{key} = {mean:{fmt}}"
    return f"{key} = {mean:{fmt}} ± {std:{fmt}}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _report(args: argparse.Namespace, result: Any, units: dict[str, str]) -> dict[str, Any]:
    """The JSON report: input, units, each member's summary and the committee's mean and σ."""
    return {
        "structure": str(args.structure),
        "frame": args.index,
        "models": [str(m) for m in args.model],
        "units": units,
        **result.summary(),
    }


def _write_json(path: Path, report: dict[str, Any]) -> Path:
    """Write ``report`` atomically, with non-finite numbers (a mean over members lacking a value) as null."""
    from .._files import atomic_write

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    text = json.dumps(clean(report), indent=1, allow_nan=False)
    return atomic_write(path, lambda fh: fh.write(text))


def _read_structure(path: str, index: int, command: str) -> Any:
    import ase.io

    if not Path(path).is_file():
        raise ValueError(f"{command}: structure file {path} does not exist")
    try:
        return ase.io.read(path, index=index)
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds for a file it cannot parse
        raise ValueError(f"{command}: cannot read frame {index} of {path} as a structure: {exc}") from exc


def _common(p: argparse.ArgumentParser, structure_help: str) -> None:
    p.add_argument("structure", help=structure_help)
    p.add_argument("model", nargs="+", help="a model file; several: a committee (mean ± σ)")
    p.add_argument("--index", type=int, default=0, help="frame of the structure file (default 0)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="default: float64")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")


def add_crystal_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``relax``, ``eos`` and ``elastic`` to the ``nearsight`` subcommands."""
    p = sub.add_parser("relax", help="relax positions and cell (ASE FrechetCellFilter) with a model")
    _common(p, "any file ASE reads")
    p.add_argument(
        "--fmax", type=float, default=1e-3, help="largest force at convergence (eV/Å, default 1e-3)"
    )
    p.add_argument("--no-cell", action="store_true", help="relax the positions only (fixed cell; molecules)")
    p.add_argument("--hydrostatic", action="store_true", help="change the volume only, keep the cell shape")
    p.add_argument("--pressure-GPa", type=float, default=0.0, help="external pressure (GPa, default 0)")
    p.add_argument("--steps", type=int, default=500, help="most optimiser steps (default 500)")
    p.add_argument("--optimizer", choices=["BFGS", "FIRE", "LBFGS"], default="BFGS", help="default: BFGS")
    p.add_argument("--output", default="relaxed.extxyz", help="relaxed structure(s), one frame per model")
    p.add_argument("--output-format", default=None, help="ASE format of --output (default: its extension)")
    p.set_defaults(func=relax_command)

    p = sub.add_parser("eos", help="equation of state E(V): V0, E0, bulk modulus B and B'")
    _common(p, "a crystal near its equilibrium volume: any file ASE reads")
    p.add_argument("--strain", type=float, default=0.04, help="largest linear strain (default 0.04)")
    p.add_argument("--points", type=int, default=9, help="number of volumes (default 9)")
    p.add_argument(
        "--eos",
        choices=["birchmurnaghan", "vinet", "murnaghan", "birch", "pouriertarantola"],
        default="birchmurnaghan",
        help="the fitted form (default birchmurnaghan)",
    )
    p.add_argument(
        "--no-relax-internal", action="store_true", help="keep the scaled positions (no relaxation)"
    )
    p.add_argument("--fmax", type=float, default=1e-3, help="internal relaxation (eV/Å, default 1e-3)")
    p.add_argument("--output-dir", default=".", help="where eos.json and eos.png go (default .)")
    p.set_defaults(func=eos_command)

    p = sub.add_parser("elastic", help="elastic constants C_ij, bulk and shear moduli of a relaxed crystal")
    _common(p, "a relaxed crystal (or pass --relax): any file ASE reads")
    p.add_argument("--delta", type=float, default=1e-3, help="strain step (default 1e-3)")
    p.add_argument(
        "--points", type=int, default=5, help="strains per pattern (default 5: 0, ±delta, ±2 delta)"
    )
    p.add_argument("--clamped-ion", action="store_true", help="no internal relaxation at each strain")
    p.add_argument("--relax", action="store_true", help="relax positions and cell first (each model)")
    p.add_argument("--fmax", type=float, default=1e-4, help="internal relaxation (eV/Å, default 1e-4)")
    p.add_argument(
        "--symmetry",
        default="triclinic",
        choices=[
            "triclinic",
            "monoclinic",
            "orthorhombic",
            "tetragonal",
            "hexagonal",
            "trigonal_high",
            "trigonal_low",
            "cubic",
        ],
        help="strain patterns (matscipy; default triclinic: no assumption; cubic: cube axes along x y z)",
    )
    p.add_argument("--output-dir", default=".", help="where elastic.json goes (default .)")
    p.set_defaults(func=elastic_command)
