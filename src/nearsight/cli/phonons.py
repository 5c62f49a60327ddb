"""``nearsight phonons``: phonon bands, DOS and thermal properties of a relaxed crystal (phonopy).

    nearsight phonons STRUCTURE MODEL [MODEL ...] [--supercell 3 3 3] [--displacement 0.01]
                      [--mesh 20 20 20] [--output-dir DIR] [--no-relax-check] [--dtype float64]

writes ``DIR/phonons.json`` (frequencies at Γ and the high-symmetry points in THz, thermal properties
at 300 K per primitive cell in eV and eV/K, imaginary modes; with several models each member's and
the committee's mean and σ), ``DIR/phonons.png`` (bands and DOS, ± σ shaded for a committee) and
``DIR/phonopy_params.yaml`` (one per member for a committee, ``phonopy_params_K.yaml``), which
``phonopy.load`` reads back; then prints a table of the frequencies.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def phonons_command(args: argparse.Namespace) -> int:
    from ..properties.common import as_calculators
    from ..properties.phonons import committee_phonons

    atoms = _read_structure(args.structure, args.index)
    calcs = as_calculators(args.model, dtype=args.dtype, device=args.device)
    where = f"{args.structure} (frame {args.index})"
    result = committee_phonons(
        atoms,
        calcs,
        mesh=tuple(args.mesh),
        supercell=None if args.supercell is None else tuple(args.supercell),
        displacement=args.displacement,
        fmax=args.fmax,
        check_relaxed=not args.no_relax_check,
        symmetrize=args.symmetrize,
        where=where,
    )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    members = result.members
    summaries = result.summaries
    imaginary = [m.imaginary_modes() for m in members]
    saved = []
    for k, member in enumerate(members):
        name = "phonopy_params.yaml" if len(members) == 1 else f"phonopy_params_{k}.yaml"
        saved.append(str(member.save(out / name)))
    report: dict[str, Any] = {
        "structure": str(args.structure),
        "frame": args.index,
        "models": [str(m) for m in args.model],
        "units": {
            "frequency": "THz (1 THz = 33.356 cm^-1); imaginary frequencies as negative numbers",
            "energy": "eV per primitive cell",
            "entropy, heat capacity": "eV/K per primitive cell",
            "q_point": "reduced coordinates of the primitive cell's reciprocal lattice",
        },
        "supercell_matrix": members[0].supercell_matrix.tolist(),
        "displacement_A": members[0].displacement,
        "interaction_range_A": members[0].interaction_range,
        "mesh": list(args.mesh),
        "phonopy_params": saved,
    }
    if len(members) == 1:
        report.update(summary=summaries[0], imaginary_modes=imaginary[0])
    else:
        report.update(members=summaries, committee=result.spread, imaginary_modes=imaginary)
    json_path = out / "phonons.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(json_path)
    png = result.plot(out / "phonons.png", mesh=tuple(args.mesh))

    _print_table(args.structure, result, imaginary)
    print(json_path)
    print(png)
    for path in saved:
        print(path)
    return 0


def _print_table(structure: str, result: Any, imaginary: list[list[dict[str, Any]]]) -> None:
    """Frequencies (THz) at each point of the band path, ± σ for a committee: all branches of a small
    cell, else the lowest six and the highest three; then the imaginary modes."""
    import numpy as np

    from ..properties.phonons import THZ_TO_CM1

    summaries, several = result.summaries, len(result.members) > 1
    supercell = result.members[0].supercell_matrix
    print(
        f"phonons of {structure}: supercell {supercell.tolist()}, {len(summaries)} model(s)"
        f"{' (mean ± σ)' if several else ''}; frequencies in THz"
    )
    keys = [key for key in summaries[0] if key.startswith("frequencies_THz_")]
    for key in keys:
        if several:
            mean, std = result.spread[key]["mean"], result.spread[key]["std"]
            cells = [f"{m:7.3f}±{s:.3f}" for m, s in zip(mean, std)]
        else:
            cells = [f"{v:7.3f}" for v in summaries[0][key]]
        if len(cells) > 12:
            cells = [*cells[:6], "...", *cells[-3:]]
        print(f"  {key.removeprefix('frequencies_THz_'):>6}  " + " ".join(cells))
    top = max(float(np.max(s[key])) for s in summaries for key in keys)
    print(f"  highest of these: {top:.3f} THz = {top * THZ_TO_CM1:.1f} cm⁻¹")
    counts = [len(modes) for modes in imaginary]
    if any(counts):
        worst = min(mode["frequency_THz"] for modes in imaginary for mode in modes)
        print(
            f"  imaginary modes (ν < -0.05 THz on the path and an 8×8×8 mesh): {counts} per model, "
            f"lowest {worst:.3f} THz"
        )
    else:
        print("  no imaginary modes (ν < -0.05 THz on the path and an 8×8×8 mesh)")


def _read_structure(path: str, index: int) -> Any:
    import ase.io

    if not Path(path).is_file():
        raise ValueError(f"structure file {path} does not exist")
    try:
        return ase.io.read(path, index=index)
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds for a file it cannot parse
        raise ValueError(f"cannot read frame {index} of {path} as a structure: {exc}") from exc


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_phonons_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phonons", help="phonon bands, DOS and thermal properties of a relaxed crystal (phonopy)"
    )
    p.add_argument("structure", help="a relaxed crystal: any file ASE reads")
    p.add_argument("model", nargs="+", help="a model file; several: a committee (mean ± σ)")
    p.add_argument("--index", type=int, default=0, help="frame of the structure file (default 0)")
    p.add_argument(
        "--supercell",
        type=_positive_int,
        nargs=3,
        default=None,
        metavar="N",
        help="diagonal supercell of the given cell (default: the smallest whose widths reach the "
        "model's interaction range, 2 × layers × cutoff)",
    )
    p.add_argument("--displacement", type=float, default=0.01, help="displacement (Å, default 0.01)")
    p.add_argument(
        "--mesh",
        type=_positive_int,
        nargs=3,
        default=[20, 20, 20],
        metavar="N",
        help="q-point mesh of the DOS and thermal properties (default 20 20 20)",
    )
    p.add_argument("--fmax", type=float, default=1e-3, help="largest force of a relaxed structure (eV/Å)")
    p.add_argument("--no-relax-check", action="store_true", help="do not stop on an unrelaxed structure")
    p.add_argument(
        "--symmetrize",
        action="store_true",
        help="impose the sum rule and index symmetry on the force constants",
    )
    p.add_argument(
        "--output-dir", default="phonons", help="where the JSON, PNG and YAML go (default phonons)"
    )
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="default: float64")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (where the model runs)")
    p.set_defaults(func=phonons_command)
