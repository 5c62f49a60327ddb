"""``nearsight mlmm``: Langevin dynamics of a nearsight region inside an OpenMM force field.

    nearsight mlmm SYSTEM MODEL [--ml-atoms 0-8,12 | --ml-residues ETOH] [--solvate-padding-nm 1.0]
                   [--forcefield charmm36.xml charmm36/water.xml] [--steps 1000] [--timestep-fs 0.5]
                   [--temperature-K 300] [--friction-per-ps 1] [--platform CPU] [--threads N]
                   [--minimize [ITERATIONS]] [--report-every 100] [--output-dir mlmm]

``--minimize`` relaxes the start with the MM force field alone, at most 500 iterations by default
(minimising the ML/MM energy instead can drive a model into geometries it never saw).

SYSTEM is a PDB/PDBx file (the force field must know every residue; bonds of non-standard residues
from CONECT records) or a molecule any ASE reader reads, which becomes the ML region and is solvated
in a water box (``--solvate-padding-nm``; its residue, ``--residue-name``, is matched to a force-field
template by elements and bonds, e.g. CHARMM36's ETOH for ethanol).  Mechanical embedding
(:func:`nearsight.mlmm.ml_mm_system`).  Writes ``log.csv`` (OpenMM's StateDataReporter),
``trajectory.dcd`` and ``final.pdb`` in the output directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def parse_atom_list(text: str) -> list[int]:
    """``"0-8,12"`` -> [0, 1, ..., 8, 12] (ranges inclusive)."""
    atoms: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            atoms.extend(range(int(first), int(last) + 1) if dash else [int(first)])
        except ValueError:
            raise ValueError(f"--ml-atoms {text!r}: expected indices and ranges such as 0-8,12") from None
    return atoms


def _system(args: argparse.Namespace, forcefield):
    """(topology, positions, ML atom indices) from SYSTEM and the selection options."""
    from openmm import app, unit

    if args.ml_atoms is not None and args.ml_residues is not None:
        raise ValueError("give the ML region with either --ml-atoms or --ml-residues, not both")
    atoms_spec = args.ml_atoms
    path = Path(args.system)
    if not path.is_file():
        raise ValueError(f"{str(path)!r}: no such file")
    if path.suffix.lower() in (".pdb", ".cif", ".pdbx"):
        if args.solvate_padding_nm is not None:
            raise ValueError("--solvate-padding-nm solvates a molecule file, not a PDB/PDBx system")
        reader = app.PDBFile if path.suffix.lower() == ".pdb" else app.PDBxFile
        structure = reader(str(path))
        topology, positions = structure.topology, structure.positions
    else:
        from ase.io import read

        from ..mlmm import topology_from_atoms

        molecule = read(str(path), index=0)
        topology, positions = topology_from_atoms(molecule, args.residue_name)
        if atoms_spec is None and args.ml_residues is None:
            atoms_spec = f"0-{len(molecule) - 1}"  # the molecule is the ML region
        padding = 1.0 if args.solvate_padding_nm is None else args.solvate_padding_nm
        modeller = app.Modeller(topology, positions)
        modeller.addSolvent(forcefield, model=args.water_model, padding=padding * unit.nanometer)
        topology, positions = modeller.topology, modeller.positions
    if atoms_spec is None and args.ml_residues is None:
        raise ValueError("give the ML region with --ml-atoms or --ml-residues")
    if atoms_spec is not None:
        region = parse_atom_list(atoms_spec)
    else:
        names = set(args.ml_residues.split(","))
        region = [a.index for a in topology.atoms() if a.residue.name in names]
        if not region:
            found = sorted({r.name for r in topology.residues()})
            raise ValueError(
                f"--ml-residues {args.ml_residues!r}: no such residue in {path} (residues: {found})"
            )
    return topology, positions, region


def mlmm_command(args: argparse.Namespace) -> int:
    import torch
    from openmm import app

    from ..mlmm import ml_mm_system

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    forcefield = app.ForceField(*args.forcefield)
    topology, positions, region = _system(args, forcefield)
    mlmm = ml_mm_system(
        topology,
        positions,
        region,
        args.model,
        forcefield=forcefield,
        cutoff_nm=args.cutoff_nm,
        charge=args.charge,
    )
    if args.minimize is not None:
        mlmm.minimize_with_mm(args.minimize, platform=args.platform, threads=args.threads)
    simulation = mlmm.simulation(
        temperature_K=args.temperature_K,
        timestep_fs=args.timestep_fs,
        friction_per_ps=args.friction_per_ps,
        platform=args.platform,
        threads=args.threads,
        seed=args.seed,
    )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    every = max(1, args.report_every)
    simulation.reporters.append(
        app.StateDataReporter(
            str(out / "log.csv"), every, step=True, time=True, potentialEnergy=True,
            kineticEnergy=True, temperature=True, speed=True,
        )
    )  # fmt: skip
    simulation.reporters.append(app.DCDReporter(str(out / "trajectory.dcd"), every))
    simulation.step(args.steps)
    state = simulation.context.getState(getPositions=True, enforcePeriodicBox=False)
    with open(out / "final.pdb", "w") as fh:
        app.PDBFile.writeFile(simulation.topology, state.getPositions(), fh)
    print(
        f"{args.steps} steps of {len(mlmm.ml_atoms)} ML atoms in {topology.getNumAtoms()} atoms: "
        f"{out / 'log.csv'}, {out / 'trajectory.dcd'}, {out / 'final.pdb'}"
    )
    return 0


def add_mlmm_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mlmm`` to the ``nearsight`` subcommands."""
    p = sub.add_parser("mlmm", help="ML/MM dynamics: a nearsight region in an OpenMM force field")
    p.add_argument("system", help="PDB/PDBx system, or a molecule file (ASE) to solvate as the ML region")
    p.add_argument("model", help="nearsight model file")
    p.add_argument("--ml-atoms", default=None, help="atom indices and ranges, e.g. 0-8,12")
    p.add_argument("--ml-residues", default=None, help="residue names, e.g. ETOH or LIG,ETOH")
    p.add_argument(
        "--forcefield",
        nargs="+",
        default=["charmm36.xml", "charmm36/water.xml"],
        help="OpenMM force field files",
    )
    p.add_argument("--residue-name", default="MOL", help="residue name of a molecule file (default MOL)")
    p.add_argument(
        "--solvate-padding-nm", type=float, default=None, help="molecule files: water padding (1.0)"
    )
    p.add_argument("--water-model", default="tip3p", help="Modeller.addSolvent water model (default tip3p)")
    p.add_argument("--cutoff-nm", type=float, default=1.0, help="nonbonded cutoff (PME in a box)")
    p.add_argument(
        "--charge", type=int, default=None, help="total charge of the ML region, for models that read it"
    )
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--timestep-fs", type=float, default=0.5)
    p.add_argument("--temperature-K", type=float, default=300.0)
    p.add_argument("--friction-per-ps", type=float, default=1.0)
    p.add_argument("--platform", default="CPU", help="OpenMM platform (CPU, CUDA, OpenCL, Reference)")
    p.add_argument("--threads", type=int, default=None, help="CPU platform and torch threads")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--minimize",
        type=int,
        nargs="?",
        const=500,
        default=None,
        metavar="ITERATIONS",
        help="minimise with the MM force field first, at most ITERATIONS steps (500; 0: to convergence)",
    )
    p.add_argument("--report-every", type=int, default=100)
    p.add_argument("--output-dir", default="mlmm")
    p.set_defaults(func=mlmm_command)
