"""The ``nearsight`` command: thin wrappers over library code.

nearsight train CONFIG.yaml [--resume | --overwrite]  # last line of output: the saved model path
nearsight train CONFIG.yaml --members K  # a committee: one model path per line
torchrun --nproc_per_node N -m nearsight train CONFIG.yaml   # data-parallel
nearsight evaluate MODEL [MODEL ...] DATA --json OUT.json [--plot parity.png]
nearsight md STRUCTURE MODEL [MODEL ...] --steps N [--ensemble nve|langevin|npt] [--pressure-bar P] ...
nearsight demo CONFIG.yaml             # train, evaluate on held-out data, MD, table, plot
nearsight active-learn CONFIG.yaml [--resume] [--allow-python-oracle]  # committee + QM oracle loop
nearsight surface-hop CONFIG.yaml [--output-dir DIR] [--resume | --overwrite]  # FSSH swarms
nearsight export MODEL.pt OUT.pt2 [--dtype float32] [--quick]   # AOTInductor package for LAMMPS
nearsight relax | eos | elastic CRYSTAL MODEL [MODEL ...]   # relaxation, E(V) and B, C_ij (committee: ± σ)
nearsight phonons CRYSTAL MODEL [MODEL ...]        # phonopy: bands, DOS, thermal properties, plots
nearsight vibrations MOLECULE MODEL [MODEL ...]    # harmonic frequencies, IR intensities, thermochemistry
nearsight spectrum TRAJECTORY --kind vdos|ir       # VDOS / IR spectrum from MD velocities or dipoles
nearsight neb INITIAL FINAL MODEL [--images 7]     # nudged elastic band (ASE): barriers, saddle, plot
nearsight pimd STRUCTURE MODEL --beads 32 ...      # path-integral MD with i-PI (centroid-virial K, g(r))
nearsight mlmm SYSTEM MODEL --ml-atoms ...         # a nearsight region in an OpenMM force field (TIP3P water)
nearsight umbrella | metad CONFIG.yaml [--resume]  # free energies: umbrella sampling + MBAR, WT metadynamics
nearsight locality STRUCTURE [--method pbe | --calculator emt] [--model M] --output-dir D  # decay, cutoff
nearsight check MODEL [STRUCTURES ...] [--nve] [--json OUT.json]  # physics checks; exit 1 if one fails

Errors reach the user as one line, ``nearsight COMMAND: error: MESSAGE``, and exit status 2;
``--traceback`` (or ``NEARSIGHT_TRACEBACK=1``) shows the Python traceback instead.  Heavy
packages (torch, ASE's calculators) are imported inside the commands, so ``--help`` and
``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from .check import add_check_parser
from .crystal import add_crystal_parsers
from .evaluate import evaluate_command
from .export import add_export_parser
from .locality import add_locality_parser
from .md import add_md_parser
from .mlmm import add_mlmm_parser
from .neb import add_neb_parser
from .phonons import add_phonons_parser
from .pimd import add_pimd_parser
from .sampling import add_sampling_parsers
from .surface_hop import surface_hop_command
from .train import active_learn_command, train_command
from .vibrations import add_vibration_parsers


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.config, args.output_dir, md_steps=args.md_steps)
    return 0


def _add_label_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default=None, help="file format (default: from the extension)")
    detected = "default: detected (energy, REF_{0}, DFT_{0}, dft_{0}, ...); the output names the key used"
    p.add_argument("--energy-key", default=None, help=f"info key of the energy ({detected.format('energy')})")
    p.add_argument(
        "--forces-key", default=None, help=f"arrays key of the forces ({detected.format('forces')})"
    )
    p.add_argument("--stress-key", default=None, help=f"info key of the stress ({detected.format('stress')})")
    p.add_argument("--virial-key", default=None, help="info key of a virial (eV), used where no stress is")
    p.add_argument(
        "--charges-key", default=None, help="arrays key of atomic charge labels (e; models with charges)"
    )
    p.add_argument("--dipole-key", default=None, help="info key of dipole labels (e·Å; models with charges)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nearsight", description="nearsight: machine-learning interatomic potentials"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config")
    p.add_argument("--output-dir", default=None, help="override output_dir of the config")
    p.add_argument(
        "--resume", action="store_true", help="continue exactly from output_dir/checkpoint.pt (same config)"
    )
    p.add_argument(
        "--members",
        type=int,
        default=1,
        help="train a committee of K models in output_dir/member_k (seeds seed ... seed+K-1, one "
        "train/validation split); a rerun keeps finished members",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an output directory that holds a run (its model, checkpoint and log files "
        "are removed; without it such a directory is refused)",
    )
    p.set_defaults(func=train_command)

    p = sub.add_parser("evaluate", help="errors of a model (or a committee's mean) on a labelled dataset")
    p.add_argument("model", nargs="+", help="a model file; several: a committee, scored by its mean")
    p.add_argument("data")
    p.add_argument("--json", default=None, help="write metrics to this JSON file")
    p.add_argument("--plot", default=None, help="write a parity plot (PNG)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--sigma-scales",
        default=None,
        metavar="JSON",
        help="a committee: calibrate σ with these scales instead of fitting them here -- a JSON file "
        '{"energy_per_atom": s, "forces": s, "stress": s} or the --json output of an earlier evaluate '
        "(its calibration → sigma_scale), e.g. fitted on validation data and checked on test data",
    )
    _add_label_keys(p)
    p.set_defaults(func=evaluate_command)

    add_md_parser(sub)

    p = sub.add_parser("demo", help="train, evaluate, run MD and plot on a config's data")
    p.add_argument("config", nargs="?", default="examples/ethanol_bpnn.yaml")
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--md-steps", type=int, default=400)
    p.set_defaults(func=_demo)

    p = sub.add_parser("active-learn", help="active learning: committee MD, QM oracle labels, retraining")
    p.add_argument("config")
    p.add_argument("--output-dir", default=None, help="override output_dir of the config")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir (after a crash)")
    p.add_argument(
        "--allow-python-oracle",
        action="store_true",
        help="allow oracle.type: python (imports and runs the named Python object); a config alone never runs code",
    )
    p.set_defaults(func=active_learn_command)

    p = sub.add_parser("surface-hop", help="fewest-switches surface hopping: swarms of trajectories")
    p.add_argument("config")
    p.add_argument("--output-dir", default=None, help="override output_dir of the config")
    p.add_argument("--resume", action="store_true", help="continue exactly from output_dir/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a directory that holds a run")
    p.set_defaults(func=surface_hop_command)

    add_export_parser(sub)
    add_crystal_parsers(sub)
    add_phonons_parser(sub)
    add_vibration_parsers(sub)
    add_neb_parser(sub)
    add_pimd_parser(sub)
    add_mlmm_parser(sub)
    add_sampling_parsers(sub)
    add_locality_parser(sub)
    add_check_parser(sub)
    _add_common_options(parser, sub)
    return parser


def _add_common_options(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction) -> None:
    """``--version`` on the command and ``--traceback`` on every subcommand."""
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"nearsight {__version__}")
    for command in sub.choices.values():
        command.add_argument(
            "--traceback",
            action="store_true",
            help="on an error, show the Python traceback (also: NEARSIGHT_TRACEBACK=1)",
        )


# errors that describe the user's input or run: one line, no traceback
USER_ERRORS = (ValueError, TypeError, OSError, FloatingPointError, ImportError)


def main(argv: list[str] | None = None) -> int:
    """Run one command; an error is one line on stderr and exit status 2 (130 on Ctrl-C)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.traceback or os.environ.get("NEARSIGHT_TRACEBACK", "0") not in ("", "0"):
            raise
        print(f"nearsight {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error reaches the user as one line
        if args.traceback or os.environ.get("NEARSIGHT_TRACEBACK", "0") not in ("", "0"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, USER_ERRORS):  # an unexpected error: its type says more
            message = f"{type(exc).__name__}: {message} (--traceback shows where)"
        print(f"nearsight {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
