"""``nearsight check``: validate a model with the physics checks of :mod:`nearsight.testing`.

    nearsight check MODEL [STRUCTURES ...] [--index :] [--max-structures 1] [--seed 0]
                    [--nve [--nve-steps 200]] [--tolerance NAME=VALUE ...] [--skip NAME ...]
                    [--json OUT.json] [--dtype float64|float32]

MODEL is a nearsight model file (``.pt``; it records its units, cutoff and species).  STRUCTURES are
any files ASE reads; ``--index`` picks their frames (default: all), and of these the first
``--max-structures`` non-periodic frames (molecules) and the first ``--max-structures`` periodic
ones are checked.  Without STRUCTURES a compact random molecule of the model's elements (bonds of
about the sum of covalent radii, no two atoms closer than 0.9 Å) and a small triclinic periodic cell
of them are built (``--seed``).

Every structure is checked for rotation, reflection, translation and permutation invariance and for
forces equal to −∇E by finite differences; periodic ones also for the stress (finite strain),
supercell extensivity and wrapped positions; molecules for far-apart additivity (for a model with
Coulomb or D3 terms: the decay of the long-range interaction instead).  Isolated atoms of every
element of the model and the smoothness of E and F as a neighbour crosses each cutoff radius are
checked once; ``--nve`` adds the energy drift of a short NVE run.  A diabatic model (several
electronic states) is checked on its adiabatic ground state, and its excited states on the
molecules and for smoothness; far-apart additivity does not apply to it.

A long-range model (Coulomb, D3) has its isolated atoms and cutoff smoothness checked on its
short-range part, and the supercell tolerance of a Coulomb model is 1e-6 (Ewald sums are converged
to their accuracy, not to round-off).  ``--dtype float32`` evaluates the symmetry, supercell,
wrapped-position, additivity and isolated-atom checks (and NVE) in single precision, with
tolerances for its round-off; finite differences and smoothness stay in float64.

Prints a table (check[structure], PASS/FAIL/SKIP, error, tolerance, detail) and a last line
``N passed, M failed: <failed checks>``.  Exit status 0: every check passed; 1: a check failed;
2: the model or a structure could not be read, or a bad option.

Examples::

    nearsight check model.pt                       # a random molecule and cell of its elements
    nearsight check model.pt test.xyz --index 0:100 --max-structures 3 --json check.json
    nearsight check model.pt crystal.cif --nve --tolerance forces_fd=1e-5 --skip supercell

From Python, :func:`nearsight.testing.model_check.check_model` takes a model, a model file, a
ForceField or any ASE calculator::

    from nearsight.testing.model_check import check_model
    report = check_model(model, [atoms], seed=0)
    print(report.table()); assert report.passed, report.summary()
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence

from ..testing.model_check import CHECK_NAMES


# --------------------------------------------------------------------------- the command
def _tolerances(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"--tolerance {item!r}: expected NAME=VALUE, e.g. forces_fd=1e-5")
        if name not in CHECK_NAMES:
            raise ValueError(f"--tolerance {item!r}: unknown check {name!r}; valid: {', '.join(CHECK_NAMES)}")
        try:
            tol = float(value)
        except ValueError:
            raise ValueError(f"--tolerance {item!r}: {value!r} is not a number") from None
        if not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"--tolerance {item!r}: the tolerance must be a positive number")
        out[name] = tol
    return out


def check_command(args: argparse.Namespace) -> int:
    from .._files import atomic_write

    unknown = sorted(set(args.skip) - set(CHECK_NAMES))
    if unknown:
        raise ValueError(f"--skip: unknown check(s) {unknown}; valid: {', '.join(CHECK_NAMES)}")
    tolerances = _tolerances(args.tolerance)
    if args.max_structures < 1:
        raise ValueError(f"--max-structures must be at least 1, got {args.max_structures}")
    if args.nve_steps < 1:
        raise ValueError(f"--nve-steps must be at least 1, got {args.nve_steps}")
    from ..models.io import load_model
    from ..testing.model_check import check_model, read_structures

    model = load_model(args.model)
    frames = read_structures(args.structures, args.index) if args.structures else None
    report = check_model(
        model,
        frames,
        seed=args.seed,
        max_structures=args.max_structures,
        tolerances=tolerances,
        skip=args.skip,
        nve=args.nve,
        nve_steps=args.nve_steps,
        dtype=args.dtype,
    )
    info = {
        "model_type": getattr(model, "model_type", type(model).__name__),
        "cutoff_A": float(model.cutoff),
        "species": [int(z) for z in model.species],
        "n_states": int(getattr(model, "n_states", 1)),
    }
    print(
        f"model {args.model}: {info['model_type']}, cutoff {info['cutoff_A']:g} Å, species {info['species']}"
        + (f", {info['n_states']} states" if info["n_states"] > 1 else "")
        + f"; {args.dtype}"
    )
    for s in report.structures:
        kind = (
            "periodic " + "".join("xyz"[i] for i in range(3) if s["periodic"][i])
            if any(s["periodic"])
            else "molecule"
        )
        print(f"structure {s['label']}: {s['formula']}, {s['n_atoms']} atoms, {kind}")
    for note in report.notes:
        print(f"note: {note}")
    print(report.table())
    print(report.summary())
    if args.json:
        data = {"model": str(args.model), **info, "dtype": args.dtype, "seed": args.seed, **report.to_dict()}
        data["tolerances"] = tolerances
        data["skipped_by_request"] = list(args.skip)
        atomic_write(args.json, lambda fh: json.dump(data, fh, indent=1))
    return 0 if report.passed else 1


def add_check_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``check`` to the ``nearsight`` subcommands."""
    p = sub.add_parser(
        "check",
        help="validate a model: symmetries, forces = -dE/dR, stress, locality, cutoff smoothness "
        "(exit 1 if a check fails)",
        description="Run the physics checks of nearsight.testing on a model file and print a report. "
        "Exit status 0: all passed; 1: a check failed; 2: bad input.",
    )
    p.add_argument("model", help="a nearsight model file (.pt)")
    p.add_argument(
        "structures",
        nargs="*",
        help="structure files ASE reads (default: a random molecule and a small periodic cell built from "
        "the model's elements); periodic frames get the periodic checks, the others the molecular ones",
    )
    p.add_argument(
        "--index",
        default=":",
        help="frames of each structure file, an ASE index such as 0, -1 or 0:10 (default: all)",
    )
    p.add_argument(
        "--max-structures",
        type=int,
        default=1,
        help="check the first N molecules and the first N periodic frames selected (default 1 of each)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random structures and checks (default 0)")
    p.add_argument("--nve", action="store_true", help="also check the energy drift of a short NVE run")
    p.add_argument("--nve-steps", type=int, default=200, help="steps of the NVE run (0.5 fs; default 200)")
    p.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"override a check's tolerance, repeatable (e.g. forces_fd=1e-5); names: {', '.join(CHECK_NAMES)}",
    )
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="NAME",
        help="do not run this check (repeatable; names as for --tolerance)",
    )
    p.add_argument(
        "--json", default=None, metavar="OUT.json", help="also write the results to this JSON file"
    )
    p.add_argument(
        "--dtype",
        default="float64",
        choices=["float64", "float32"],
        help="precision of the evaluation (default float64, tight tolerances; float32: the model as it "
        "usually runs, looser default tolerances)",
    )
    p.set_defaults(func=check_command)
