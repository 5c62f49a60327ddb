"""Small float64 water models of each type and their compiled packages (nearsight.models.aoti),
shared by the package tests and the LAMMPS plugin tests.

Compiling a package takes 30-90 s, so each is built once per test run, in a directory shared by
the pytest-xdist workers (a file lock keeps two workers from compiling the same one): use the
``aoti_package`` fixture of conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
from ase import Atoms

from nearsight import keys
from nearsight.data.neighbours import atoms_to_graph
from nearsight.descriptors.acsf import default_acsf_params
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.equivariant import EquivariantPotential
from nearsight.models.forcefield import edge_vectors
from nearsight.models.io import save_model
from structures import water_box

KINDS = ("acsf", "soap", "equivariant", "equivariant1")  # equivariant1: one layer


def _with_statistics(model: BehlerParrinello, structures: list[Atoms]) -> BehlerParrinello:
    feats = []
    for atoms in structures:
        g = atoms_to_graph(atoms, model.cutoff, torch.float64)
        g[keys.EDGE_VECTORS] = edge_vectors(
            g[keys.POSITIONS], g[keys.CELL], g[keys.BATCH], g[keys.EDGE_INDEX], g[keys.CELL_SHIFTS]
        )
        with torch.no_grad():
            feats.append(model.features(g))
    f = torch.cat(feats)
    mean, std = f.mean(0), f.std(0)
    std = torch.maximum(std, 0.2 * mean.abs() + 1e-2)
    model.set_statistics(mean, std, {1: -13.6, 8: -432.0}, 0.5, feature_range=(f.min(0)[0], f.max(0)[0]))
    model.set_isolated_energy({1: -13.5, 8: -431.0})
    return model


def water_model(kind: str) -> torch.nn.Module:
    """A deterministic random float64 H/O model of ``kind`` (acsf, soap, equivariant: two layers,
    equivariant1: one)."""
    torch.manual_seed(7)
    if kind == "acsf":
        desc = dict(r_cut=4.0, r_cut_angular=3.5, **default_acsf_params(4.0, r_cut_angular=3.5))
        model = _with_statistics(BehlerParrinello([1, 8], desc, hidden=(16, 16)).double(), [water_box(2)])
    elif kind == "soap":
        desc = {"type": "soap", "r_cut": 4.0, "n_max": 3, "l_max": 3, "sigma": 0.5,
                "bispectrum": {"n_max": 2, "l_max": 2}}  # fmt: skip
        model = _with_statistics(BehlerParrinello([1, 8], desc, hidden=(16, 16)).double(), [water_box(2)])
    elif kind in ("equivariant", "equivariant1"):
        args = {
            "channels": 4,
            "l_max": 1,
            "sh_l_max": 2,
            "correlation": 2,
            "num_layers": 2 if kind == "equivariant" else 1,
        }
        model = EquivariantPotential(
            [1, 8], cutoff=3.5, radial_hidden=(8,), readout_hidden=4, **args
        ).double()
        model.set_statistics({1: -13.6, 8: -432.0}, 0.5, avg_num_neighbours=8.0)
        model.set_isolated_energy({1: -13.5, 8: -431.0})
    else:
        raise ValueError(kind)
    return model.eval()


def build_package(kind: str, directory: Path, dtype: str = "float64") -> tuple[Path, Path]:
    """Model file and package of ``kind`` in ``directory`` (the package compiled unoptimised, by
    the command line for the ACSF model so that ``nearsight export`` is exercised too)."""
    from nearsight.cli.main import main
    from nearsight.models.aoti import export_package

    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / f"{kind}.pt"
    package = directory / f"{kind}_{dtype}.pt2"
    if not package.exists():
        model = water_model(kind)
        save_model(model, model_path)
        if kind == "acsf" and dtype == "float64":
            assert main(["export", str(model_path), str(package), "--quick"]) == 0
        else:
            export_package(model, package, dtype=dtype, optimise=False)
    return model_path, package
