"""``nearsight check``: every example model type passes; broken models fail with the check named.

Models are built (untrained, small) from the ``model`` section of each example config, saved to a
model file and checked through the command (exit 0/1/2, report, JSON) or through
:func:`nearsight.testing.model_check.check_model` (models and ASE calculators).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read, write
from torch import nn

from nearsight import keys
from nearsight.calculator import NearsightCalculator
from nearsight.cli.main import main
from nearsight.models.io import model_to_dict, save_model
from nearsight.testing.model_check import CHECK_NAMES, check_model, default_structures
from nearsight.training.config import validate_config
from nearsight.training.model_setup import build_model

pytestmark = pytest.mark.xdist_group("check_cli")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ETHANOL = EXAMPLES / "data" / "ethanol_test200.xyz"
WATER = EXAMPLES / "data" / "water_seeds.xyz"
# small sizes: the checks test the architecture, not the fit
TINY = {
    "bpnn": {"n_radial": 4, "n_angular_shifts": 2, "n_angle_sections": 2, "hidden": [8]},
    "soap": {"n_max": 2, "l_max": 2, "hidden": [8]},
    "equivariant": {"channels": 8, "l_max": 1, "sh_l_max": 2, "correlation": 2, "num_layers": 2,
                    "n_radial": 4, "radial_hidden": [8]},
}  # fmt: skip
SPECIES = {"ch2nh2_diabatic": [1, 6, 7], "active_learning": [1, 8]}


def example_model(name: str, **overrides) -> nn.Module:
    """The model of ``examples/NAME.yaml`` (the committee's for active_learning), made small."""
    raw = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    section = dict((raw["committee"]["train"] if name == "active_learning" else raw)["model"])
    if section.get("type") == "equivariant":
        section["equivariant"] = {**section.get("equivariant", {}), **TINY["equivariant"]}
    else:
        section.update(TINY["soap" if section.get("descriptor") == "soap" else "bpnn"])
    section.update(overrides)
    cfg = validate_config({"data": {"train": "x"}, "model": section})
    torch.manual_seed(0)
    return build_model(cfg["model"], SPECIES.get(name, [1, 6, 8])).double().eval()


def structures_for(name: str, tmp: Path) -> list[str]:
    """A molecule file (all frames of ethanol_test200.xyz for the ethanol models) and a periodic cell."""
    if name == "ch2nh2_diabatic":  # CH2NH2+, planar, slightly bent out of plane
        xyz = [
            [0, 0, 0],
            [1.28, 0, 0.05],
            [-0.55, 0.94, 0],
            [-0.55, -0.94, 0.1],
            [1.83, 0.87, 0],
            [1.83, -0.87, 0],
        ]
        molecule = Atoms("CNHHHH", positions=xyz)
    else:
        molecule = read(WATER if name == "active_learning" else ETHANOL, 0)
        molecule.calc = None
    cell = molecule.copy()
    cell.center(vacuum=1.4)
    cell.set_cell(cell.cell.array + 0.3 * np.triu(np.ones((3, 3)), 1), scale_atoms=False)  # triclinic
    cell.pbc = True
    write(tmp / "molecule.xyz", molecule)
    write(tmp / "cell.xyz", cell)
    return [str(ETHANOL if name.startswith("ethanol") else tmp / "molecule.xyz"), str(tmp / "cell.xyz")]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


EXAMPLE_MODELS = [
    ("ethanol_bpnn", {}),
    ("ethanol_soap", {}),
    ("ethanol_equivariant", {}),
    ("ethanol_longrange", {}),
    ("ethanol_longrange_equivariant", {}),
    # the example's couplings: both is not reflection invariant (test below); each kind alone is.
    # Two layers: a pseudoscalar (0o) readout needs them (one layer gives p = 0)
    (
        "ch2nh2_diabatic",
        {
            "couplings": "pseudoscalar",
            "equivariant": {**TINY["equivariant"], "parity": "both"},
        },
    ),
    ("active_learning", {}),
]


@pytest.mark.parametrize("name,overrides", EXAMPLE_MODELS, ids=[n for n, _ in EXAMPLE_MODELS])
def test_every_example_model_passes(name, overrides, tmp_path, capsys):
    path = save_model(example_model(name, **overrides), tmp_path / "model.pt")
    code, out, err = run(capsys, str(path), "--json", str(tmp_path / "built.json"))
    assert code == 0, out + err
    assert re.fullmatch(r"\d+ passed, 0 failed( \(1 skipped\))?", out.strip().splitlines()[-1]), out
    report = json.loads((tmp_path / "built.json").read_text())
    assert report["passed"] and report["failed"] == []
    checks = {r["check"] for r in report["results"]}
    assert {"rotation", "reflection", "permutation", "forces_fd", "stress_fd", "supercell", "wrapped",
            "isolated_atom", "smoothness"} <= checks  # fmt: skip
    assert checks & {"additivity", "longrange_additivity"}
    assert [s["label"] for s in report["structures"]] == ["random_molecule", "random_cell"]

    files = structures_for(name, tmp_path)
    # the same checks on given structures (isolated atoms and smoothness do not depend on them)
    code, out, err = run(
        capsys, str(path), *files, "--skip", "smoothness", "--skip", "isolated_atom",
        "--json", str(tmp_path / "given.json"),
    )  # fmt: skip
    assert code == 0, out + err
    report = json.loads((tmp_path / "given.json").read_text())
    labels = [s["label"] for s in report["structures"]]
    assert labels == [f"{Path(files[0]).name}:0", "cell.xyz:0"]
    assert {"stress_fd", "supercell"} <= {
        r["check"] for r in report["results"] if r["structure"] == labels[1]
    }
    if "longrange" in name:
        assert "longrange_additivity" in {r["check"] for r in report["results"]}
        assert "long-range model" in out
    if "diabatic" in name:
        assert "rotation[molecule.xyz:0,S1]" in out and "diabatic model with 2 states" in out


def test_json_skip_tolerance_nve_and_index(tmp_path, capsys):
    path = save_model(example_model("ethanol_bpnn"), tmp_path / "model.pt")
    code, out, _ = run(
        capsys, str(path), str(ETHANOL), "--index", "3:5", "--max-structures", "2", "--skip", "smoothness",
        "--skip", "supercell", "--tolerance", "forces_fd=1e-30", "--nve", "--nve-steps", "20",
        "--json", str(tmp_path / "out.json"),
    )  # fmt: skip
    assert code == 1  # no finite-difference error is below 1e-30
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["failed"] == ["forces_fd[ethanol_test200.xyz:3]", "forces_fd[ethanol_test200.xyz:4]"]
    assert out.strip().splitlines()[-1] == f"{len(report['results']) - 2} passed, 2 failed: " + ", ".join(
        report["failed"]
    )
    names = [r["name"] for r in report["results"]]
    assert "smoothness" not in names and "nve_drift[ethanol_test200.xyz:3]" in names
    assert report["tolerances"] == {"forces_fd": 1e-30}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--skip", "rotate"], "unknown check(s) ['rotate']; valid: rotation, reflection"),
        (["--tolerance", "forces_fd"], "expected NAME=VALUE"),
        (["--tolerance", "force=1e-3"], "unknown check 'force'"),
        (["--tolerance", "forces_fd=-1"], "must be a positive number"),
        ([str(WATER), "--index", "500"], "water_seeds.xyz' has no frame '500'"),
        ([str(WATER), "--index", "abc"], "--index 'abc': not a frame number or slice"),
        (["NH3.xyz"], "NH3.xyz:0: element(s) [7] are not among the model's species [1, 8]"),
        (["missing.xyz"], "structure file 'missing.xyz' does not exist"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write("NH3.xyz", Atoms("NH3", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    path = save_model(example_model("active_learning", hidden=[4]), tmp_path / "model.pt")
    code, out, err = run(capsys, str(path), *argv)
    assert code == 2 and out == ""
    assert err.startswith("nearsight check: error: ") and message in err and len(err.splitlines()) == 1
    code, _, err = run(capsys, "missing.pt")
    assert code == 2 and "model file 'missing.pt' does not exist" in err


def test_default_structures_are_compact_and_deterministic():
    from ase.geometry import get_distances

    for species in ([1, 6, 8], [29], [1, 8]):
        molecule, cell = default_structures(species, seed=3)
        again = default_structures(species, seed=3)[0]
        assert np.array_equal(molecule.positions, again.positions)
        assert set(molecule.numbers) == set(species) == set(cell.numbers)
        d = get_distances(molecule.positions)[1] + np.eye(len(molecule)) * 99
        assert d.min() >= 0.9 - 1e-12 and molecule.get_all_distances().max() < 12.0
        d = get_distances(cell.positions, cell=cell.cell, pbc=True)[1] + np.eye(len(cell)) * 99
        assert d.min() >= 0.9 - 1e-12 and cell.pbc.all() and cell.get_volume() > 0


# ----------------------------------------------------------------------- broken models
def test_hard_cutoff_soap_fails_smoothness(tmp_path, capsys):
    """``weighting: {w0: 1.0}`` (only the centre atom's weight, as in DScribe) replaces the default
    smooth ``poly`` weighting: neighbours count up to r_cut + padding and are dropped there, where
    their Gaussians are down to 10⁻³, so E and F jump (by ~1e-5 eV/Å here, 10x the tolerance)."""
    path = save_model(example_model("ethanol_soap", weighting={"w0": 1.0}), tmp_path / "hard.pt")
    code, out, _ = run(capsys, str(path), str(ETHANOL), "--index", "0", "--json", str(tmp_path / "o.json"))
    assert code == 1
    report = json.loads((tmp_path / "o.json").read_text())
    assert "smoothness" in report["failed"] and "smoothness" in out.strip().splitlines()[-1]
    assert all(f.split("[")[0] in ("smoothness", "additivity") for f in report["failed"])


def test_tampered_model_file_is_refused(tmp_path, capsys):
    """A file whose recorded cutoff was edited (smaller than the one its descriptor uses) is refused
    on loading, naming the file: exit 2, not a report on the wrong model."""
    data = model_to_dict(example_model("ethanol_bpnn", hidden=[4]))
    data["cutoff"] = 3.0
    torch.save(data, tmp_path / "tampered.pt")
    code, _, err = run(capsys, str(tmp_path / "tampered.pt"))
    assert code == 2 and "tampered.pt" in err and "cutoff/species in the header do not match" in err


class UnderstatedCutoff(nn.Module):
    """A model whose ``cutoff`` attribute (the neighbour list the force field builds) is smaller than
    the radius its descriptor reaches: neighbours beyond it vanish abruptly."""

    def __init__(self, model: nn.Module, cutoff: float) -> None:
        super().__init__()
        self.model, self.cutoff, self.species = model, cutoff, list(model.species)

    def forward(self, graph):
        return self.model(graph)


class NotRotationInvariant(nn.Module):
    """Adds Σ_j f_c(r_ij) x_ij²: translation and permutation invariant, smooth, but x is a fixed axis."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.cutoff, self.species = model, model.cutoff, list(model.species)

    def forward(self, graph):
        out = dict(self.model(graph))
        vectors = graph[keys.EDGE_VECTORS]  # [n_edges, 3]
        r = torch.linalg.norm(vectors, dim=1)
        fc = 0.5 * (torch.cos(torch.pi * r / self.cutoff) + 1.0)
        extra = torch.zeros_like(out[keys.ATOMIC_ENERGIES]).index_add(
            0, graph[keys.EDGE_INDEX][0], 0.01 * fc * vectors[:, 0] ** 2
        )
        out[keys.ATOMIC_ENERGIES] = out[keys.ATOMIC_ENERGIES] + extra
        return out


class WrongSignForces(Calculator):
    """An ASE calculator with a sign error: forces = +∇E."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = NearsightCalculator(model)
        self.cutoff, self.species = model.cutoff, list(model.species)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms.copy()
        atoms.calc = self.inner
        self.results = {"energy": atoms.get_potential_energy(), "forces": -atoms.get_forces()}
        if "stress" in properties:
            self.results["stress"] = atoms.get_stress()


def _failed_checks(report) -> set[str]:
    return {name.split("[")[0] for name in report.failed}


def test_understated_cutoff_fails_smoothness():
    model = example_model("ethanol_bpnn", cutoff_angular=5.0)
    report = check_model(UnderstatedCutoff(model, 3.5), [read(ETHANOL, 0)], skip=["supercell"])
    assert not report.passed and "smoothness" in _failed_checks(report), report.table()
    assert "smoothness" in report.summary()
    assert check_model(model, [read(ETHANOL, 0)], skip=["supercell"]).passed


def test_rotation_variant_model_fails_rotation_only():
    report = check_model(
        NotRotationInvariant(example_model("ethanol_bpnn")), skip=["supercell", "smoothness"]
    )
    assert _failed_checks(report) == {"rotation", "reflection"}, report.table()
    assert {"translation", "permutation", "forces_fd", "stress_fd", "wrapped"} <= {
        r.name.split("[")[0] for r in report.results if r.passed
    }


def test_calculator_with_wrong_force_sign_fails_forces_fd():
    report = check_model(WrongSignForces(example_model("ethanol_bpnn")), skip=["supercell", "smoothness"])
    assert _failed_checks(report) == {"forces_fd"}, report.table()
    assert "ASE calculator WrongSignForces" in " ".join(report.notes)


def test_diabatic_couplings_both_are_not_reflection_invariant():
    """A coupling s + p (scalar plus pseudoscalar) becomes s - p under a reflection: the adiabatic
    energies, functions of its square, change.  The check finds it and the report says why."""
    model = example_model("ch2nh2_diabatic", equivariant={**TINY["equivariant"], "parity": "both"})
    assert model.couplings == "both"
    report = check_model(
        model, skip=[n for n in CHECK_NAMES if n not in ("rotation", "reflection", "permutation")]
    )
    assert _failed_checks(report) == {"reflection"}, report.table()
    assert any("couplings: both" in note for note in report.notes)
    # a parity per state instead: the scalar and pseudoscalar readouts on their own pairs, all pass
    model = example_model(
        "ch2nh2_diabatic", equivariant={**TINY["equivariant"], "parity": "both"},
        couplings="scalar", n_states=3, state_parity=[1, 1, -1],
    )  # fmt: skip
    report = check_model(
        model, skip=[n for n in CHECK_NAMES if n not in ("rotation", "reflection", "permutation")]
    )
    assert not _failed_checks(report), report.table()


def test_check_names_match_the_checks():
    report = check_model(example_model("ethanol_bpnn"), nve=True, nve_steps=5)
    assert {r.name.split("[")[0] for r in report.results} == set(CHECK_NAMES) - {"longrange_additivity"}


def test_float32_checks_round_off_and_keeps_derivatives_in_float64(tmp_path, capsys):
    path = save_model(example_model("ethanol_bpnn").float(), tmp_path / "model.pt")
    code, out, err = run(capsys, str(path), "--dtype", "float32", "--json", str(tmp_path / "o.json"))
    assert code == 0, out + err
    results = {r["name"]: r for r in json.loads((tmp_path / "o.json").read_text())["results"]}
    assert results["rotation[random_molecule]"]["tolerance"] == 1e-3
    assert 1e-12 < results["rotation[random_molecule]"]["error"] < 1e-4  # float32 round-off
    assert results["forces_fd[random_molecule]"]["error"] < 1e-8  # finite differences in float64
    assert "float32: symmetry" in out
