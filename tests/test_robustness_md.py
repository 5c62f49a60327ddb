"""Robustness where users get hurt (issue 16): coincident atoms, extrapolation reports,
``nearsight md`` as users expect it, and configs that would run code.

Models are tiny and untrained (ACSF and SOAP Behler-Parrinello networks, the equivariant
potential) or small fake modules that return ``keys.EXTRAPOLATION`` from the geometry.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.io import Trajectory, write
from torch import nn

from nearsight import NearsightCalculator, keys
from nearsight.active_learning import ActiveLearningConfigError, load_al_config, make_oracle
from nearsight.cli.main import main
from nearsight.guards import (
    CloseAtomsError,
    ExtrapolationError,
    ExtrapolationWarning,
    NonFiniteOutputError,
)
from nearsight.models.equivariant import EquivariantPotential
from nearsight.models.io import save_model
from nearsight.nn import scatter_sum
from nearsight.simulate.md import run_md
from nearsight.training.config import validate_config
from nearsight.training.model_setup import build_model
from nearsight.uncertainty import EnsembleCalculator

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ models
def _model_section(**over) -> dict:
    model = {"cutoff": 3.5, "n_radial": 4, "n_angular_eta": 1, "n_angle_sections": 2, "n_angular_shifts": 2}
    return validate_config({"data": {"train": "x.xyz"}, "model": {**model, "hidden": [8], **over}})["model"]


def acsf_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(_model_section(), [1, 8]).double()


def soap_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(_model_section(descriptor="soap", n_max=2, l_max=2), [1, 8]).double()


def equivariant_model() -> nn.Module:
    torch.manual_seed(0)
    model = EquivariantPotential(
        [1, 8], cutoff=3.5, channels=4, l_max=1, sh_l_max=2, correlation=2, num_layers=1,
        radial_hidden=(8,), readout_hidden=4,
    ).double()  # fmt: skip
    model.set_statistics({1: -13.6, 8: -2035.6}, 0.5, avg_num_neighbours=2.0)
    return model


MODELS = {"acsf": acsf_model, "soap": soap_model, "equivariant": equivariant_model}


class PairModel(nn.Module):
    """Exponential pair repulsion; per-atom extrapolation = coordinates with |x| > ``limit`` (× scale).

    ``nan=True`` returns NaN energies (a broken model).
    """

    species = [1, 8]

    def __init__(self, limit: float = 5.0, scale: float = 1.0, extrapolation: bool = True, nan: bool = False):
        super().__init__()
        self.cutoff, self.limit, self.scale = 3.0, limit, scale
        self.report, self.nan = extrapolation, nan

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        r = torch.linalg.vector_norm(graph[keys.EDGE_VECTORS], dim=-1)  # [n_edges]
        n = graph[keys.POSITIONS].shape[0]
        energies = scatter_sum(0.5 * torch.exp(-2.0 * r), graph[keys.EDGE_INDEX][0], n)  # [n_atoms]
        if self.nan:
            energies = energies * float("nan")
        out = {keys.ATOMIC_ENERGIES: energies}
        if self.report:
            outside = (graph[keys.POSITIONS].detach().abs() > self.limit).sum(-1)  # [n_atoms]
            out[keys.EXTRAPOLATION] = self.scale * outside.to(energies.dtype)
        return out


def water(offset: float | None = None) -> Atoms:
    """H2O; ``offset``: hydrogen 1 placed that far (Å, along x) from the oxygen."""
    atoms = molecule("H2O")
    if offset is not None:
        atoms.positions[1] = atoms.positions[0] + [offset, 0.0, 0.0]
    return atoms


# ---------------------------------------------- item 2: coincident atoms
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_close_atoms_raise_naming_the_pair(kind):
    model = MODELS[kind]()
    calc = NearsightCalculator(model)
    assert np.isfinite(calc.get_potential_energy(water()))
    for offset in (0.0, 0.03):
        with pytest.raises(CloseAtomsError, match=rf"atoms 0 \(O\) and 1 \(H\) are {offset:g} Å apart"):
            calc.get_forces(water(offset))
    with pytest.raises(CloseAtomsError, match="closer than min_distance"):
        EnsembleCalculator([model, model]).get_forces(water(0.0))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_coincident_atoms_without_the_distance_check_are_a_non_finite_error(kind):
    """min_distance=0: the model's NaN is caught on the way out, naming the closest pair."""
    calc = NearsightCalculator(MODELS[kind](), min_distance=0.0)
    with pytest.raises(NonFiniteOutputError, match=r"closest pair: atoms 0 \(O\) and 1 \(H\) are 0 Å apart"):
        calc.get_forces(water(0.0))


def test_non_finite_model_output_names_the_closest_pair_and_the_member():
    with pytest.raises(NonFiniteOutputError, match=r"non-finite energy.*closest pair: atoms 0 \(O\) and"):
        NearsightCalculator(PairModel(nan=True)).get_potential_energy(water())
    committee = EnsembleCalculator([PairModel(), PairModel(nan=True)])
    with pytest.raises(NonFiniteOutputError, match="committee member 1 returned non-finite"):
        committee.get_forces(water())


def test_close_periodic_images_are_named():
    atoms = Atoms("H2", positions=[[0.0, 0.0, 0.0], [2.98, 0.0, 0.0]], cell=[3.0, 6.0, 6.0], pbc=True)
    with pytest.raises(CloseAtomsError, match=r"periodic image \[-1, 0, 0\]\) are 0\.02 Å apart"):
        NearsightCalculator(acsf_model()).get_forces(atoms)


def _md_model(tmp_path: Path, feature_range: float | None = None) -> str:
    """An ACSF model file; ``feature_range``: every descriptor's training range is [r, r]."""
    model = acsf_model()
    if feature_range is not None:
        with torch.no_grad():
            model.feature_min.fill_(feature_range)
            model.feature_max.fill_(feature_range)
    return str(save_model(model, tmp_path / "model.pt"))


def test_nearsight_md_stops_with_one_message_when_atoms_collide(tmp_path, capsys):
    """Two hydrogens fly at each other (the frame's own velocities): a clear error, not NaN."""
    atoms = Atoms("H2", positions=[[-0.5, 0.0, 0.0], [0.5, 0.0, 0.0]])
    atoms.set_velocities(np.array([[0.16, 0.0, 0.0], [-0.16, 0.0, 0.0]]) / units.fs)  # ±0.16 Å/fs
    start = tmp_path / "start.extxyz"
    write(start, atoms)
    traj = tmp_path / "md.traj"
    args = ["md", str(start), _md_model(tmp_path), "--steps", "20", "--trajectory", str(traj), "--quiet"]
    assert main([*args, "--log", str(tmp_path / "md.log")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.fullmatch(
        r"nearsight md: error: .*start\.extxyz \(frame 0\): MD step \d+ \(t = [\d.]+ fs\): H2 \(2 atoms\): atoms 0 "
        r"\(H\) and 1 \(H\) are 0\.0\d+ Å apart, closer than min_distance = 0\.1 Å.*md\.traj",
        err[0],
    ), err[0]


# ------------------------------------------------------ item 1: extrapolation
def _moved(**positions: list[float]) -> Atoms:
    atoms = water()
    for index, xyz in positions.items():
        atoms.positions[int(index[1:])] = xyz
    return atoms


def test_calculator_reports_extrapolation_and_warns_when_it_gets_worse():
    calc = NearsightCalculator(PairModel(limit=5.0))
    inside, outside = water(), _moved(a1=[6.0, 0.0, 0.0], a2=[6.0, 7.0, 0.0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calc.get_forces(inside)
        assert calc.results["extrapolating_atoms"] == 0 and not caught
        calc.get_forces(outside)
        assert calc.results["extrapolating_atoms"] == 2
        np.testing.assert_array_equal(calc.results["extrapolation"], [0.0, 1.0, 2.0])
        assert isinstance(calc.results["extrapolation"], np.ndarray)
        assert isinstance(calc.results["extrapolating_atoms"], int)
        assert len(caught) == 1 and caught[0].category is ExtrapolationWarning
        assert re.search(
            r"2 of 3 atoms .*outside the training data.*worst: atom 2 \(H\), 2 ", str(caught[0].message)
        )
        calc.get_forces(_moved(a1=[6.5, 0.0, 0.0], a2=[6.0, 7.0, 0.0]))  # still outside: no new warning
        assert len(caught) == 1
        calc.get_forces(inside)  # back inside and out again as before: no new warning
        calc.get_forces(outside)
        assert len(caught) == 1
        calc.get_forces(_moved(a0=[0.0, 9.0, 0.0], a1=[6.0, 0.0, 0.0], a2=[6.0, 7.0, 0.0]))
        assert calc.results["extrapolating_atoms"] == 3 and len(caught) == 2  # more atoms: warns


def test_extrapolation_modes():
    outside = _moved(a2=[0.0, 0.0, 9.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calc = NearsightCalculator(PairModel(), on_extrapolation="ignore")
        assert calc.get_potential_energy(outside) and calc.results["extrapolating_atoms"] == 1
    calc = NearsightCalculator(PairModel(), on_extrapolation="raise")
    for _ in range(2):  # every evaluation raises, not only the first
        with pytest.raises(ExtrapolationError, match=r"1 of 3 atoms .*worst: atom 2 \(H\)") as info:
            calc.get_forces(outside)
    assert isinstance(info.value, RuntimeError)
    np.testing.assert_array_equal(info.value.counts, [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="on_extrapolation = 'loud'"):
        NearsightCalculator(PairModel(), on_extrapolation="loud")
    calc = NearsightCalculator(PairModel(extrapolation=False))  # a model that does not report it
    calc.get_forces(outside)
    assert "extrapolation" not in calc.results and "extrapolating_atoms" not in calc.results


def test_committee_reports_the_largest_count_over_members():
    members = [PairModel(scale=1.0), PairModel(scale=3.0), PairModel(extrapolation=False)]
    calc = EnsembleCalculator(members, on_extrapolation="ignore")
    calc.get_forces(_moved(a1=[6.0, 0.0, 0.0]))
    np.testing.assert_array_equal(calc.results["extrapolation"], [0.0, 3.0, 0.0])
    assert calc.results["extrapolating_atoms"] == 1
    with pytest.raises(ExtrapolationError):
        EnsembleCalculator(members, on_extrapolation="raise").get_forces(_moved(a1=[6.0, 0.0, 0.0]))


def test_run_md_counts_and_stops_on_extrapolation():
    atoms = water()
    velocities = np.array([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.0, 0.0, 0.0]])  # Å/fs: H 1 flies along +x
    atoms.set_velocities(velocities / units.fs)
    limit = float(atoms.positions[1, 0]) + 1.0
    calc = NearsightCalculator(PairModel(limit=limit), on_extrapolation="ignore")
    full = run_md(atoms, calc, steps=30, timestep_fs=0.5, init_velocities=False)
    assert full.steps == 30 and 0 < full.extrapolating_steps < 31
    first = int(np.argmax(full.extrapolating_atoms > 0))
    stopped = run_md(
        atoms, calc, steps=30, timestep_fs=0.5, init_velocities=False, stop_on_extrapolation=True
    )
    assert stopped.steps == first and stopped.stopped.startswith(f"stopped at step {first} ")
    calc = NearsightCalculator(PairModel(limit=limit), on_extrapolation="raise")
    with pytest.raises(ExtrapolationError, match=rf"^MD step {first} "):
        run_md(atoms, calc, steps=30, timestep_fs=0.5, init_velocities=False)


def test_nearsight_md_reports_extrapolation(tmp_path, capsys):
    start = tmp_path / "start.xyz"
    write(start, water())
    files = ["--trajectory", str(tmp_path / "md.traj"), "--log", str(tmp_path / "md.log")]
    common = ["--steps", "4", "--quiet", *files]
    assert main(["md", str(start), _md_model(tmp_path), *common]) == 0
    assert "extrapolation: atoms outside the training data at 0 of 5 steps" in capsys.readouterr().out
    outside = _md_model(tmp_path, feature_range=0.0)  # nothing looks like the training data
    assert main(["md", str(start), outside, *common]) == 0
    captured = capsys.readouterr()
    assert "extrapolation: atoms outside the training data at 5 of 5 steps (at most 3 atoms)" in captured.out
    warned = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warned) == 1 and warned[0].startswith("nearsight md: warning: the model extrapolates: 3 of 3")
    assert main(["md", str(start), outside, *common, "--stop-on-extrapolation"]) == 3
    captured = capsys.readouterr()
    assert "nearsight md: stopped at step 0 (t = 0.0000 ps): 3 extrapolating atom(s)" in captured.err
    assert "\n0 steps of 0.5 fs" in captured.out


# ------------------------------------------------ item 10: nearsight md as expected
def _frame_with_velocities(tmp_path: Path) -> tuple[Path, np.ndarray]:
    atoms = water()
    rng = np.random.default_rng(1)
    atoms.set_momenta(rng.normal(scale=0.05, size=(3, 3)))
    path = tmp_path / "frame.extxyz"
    write(path, atoms)
    return path, atoms.get_momenta()


def test_md_keeps_the_velocities_of_a_frame(tmp_path, capsys):
    start, momenta = _frame_with_velocities(tmp_path)
    model = _md_model(tmp_path)
    traj = tmp_path / "md.traj"
    out = ["--trajectory", str(traj), "--log", str(tmp_path / "md.log"), "--steps", "2", "--quiet"]
    assert main(["md", str(start), model, *out]) == 0
    assert "starting from the velocities of" in capsys.readouterr().out
    with Trajectory(str(traj)) as frames:
        np.testing.assert_allclose(frames[0].get_momenta(), momenta, atol=1e-7)  # extxyz precision
    assert main(["md", str(start), model, *out, "--init-velocities"]) == 0
    assert "Maxwell-Boltzmann velocities at 300 K" in capsys.readouterr().out
    with Trajectory(str(traj)) as frames:
        assert not np.allclose(frames[0].get_momenta(), momenta, atol=1e-3)
    plain = tmp_path / "plain.xyz"
    write(plain, water())  # no velocities: Maxwell-Boltzmann
    assert main(["md", str(plain), model, *out]) == 0
    assert "Maxwell-Boltzmann" in capsys.readouterr().out
    result = run_md(water(), NearsightCalculator(PairModel()), steps=0)
    assert result.velocities_initialised and result.temperature[0] > 0


def test_langevin_without_drift_and_without_the_fixcm_warning(tmp_path, capsys):
    calc = NearsightCalculator(PairModel())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_md(water(), calc, steps=5, ensemble="langevin", temperature_K=300.0)
    assert not [w for w in caught if "fixcm" in str(w.message)], [str(w.message) for w in caught]
    assert np.isnan(result.drift_ev_per_atom_ps) and result.ensemble == "langevin"
    assert np.isfinite(run_md(water(), calc, steps=5).drift_ev_per_atom_ps)
    start = tmp_path / "start.xyz"
    write(start, water())
    model = _md_model(tmp_path)
    files = ["--trajectory", str(tmp_path / "md.traj"), "--log", str(tmp_path / "md.log"), "--quiet"]
    assert main(["md", str(start), model, "--steps", "3", "--ensemble", "langevin", *files]) == 0
    assert "energy drift" not in capsys.readouterr().out
    assert main(["md", str(start), model, "--steps", "3", *files]) == 0
    assert "energy drift" in capsys.readouterr().out


def test_md_progress_lines_and_quiet(tmp_path, capsys):
    start = tmp_path / "start.xyz"
    write(start, water())
    model = _md_model(tmp_path)
    files = ["--trajectory", str(tmp_path / "md.traj"), "--log", str(tmp_path / "md.log")]
    assert main(["md", str(start), model, "--steps", "4", "--progress-every", "2", *files]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [int(line.split()[1]) for line in lines] == [0, 2, 4]
    assert re.fullmatch(
        r"step +4  t +0\.0020 ps  T +[\d.]+ K  Epot +-?[\d.]+ eV  Etot +-?[\d.]+ eV  extrapolating atoms 0",
        lines[-1],
    ), lines[-1]
    assert main(["md", str(start), model, "--steps", "4", "--progress-every", "2", "--quiet", *files]) == 0
    out = capsys.readouterr().out
    assert not [line for line in out.splitlines() if line.startswith("step ")] and "4 steps of 0.5 fs" in out


def test_md_device_reaches_the_calculator(tmp_path, capsys, monkeypatch):
    import nearsight.calculator

    seen = []

    class Spy(nearsight.calculator.NearsightCalculator):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("device"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(nearsight.calculator, "NearsightCalculator", Spy)
    start = tmp_path / "start.xyz"
    write(start, water())
    model = _md_model(tmp_path)
    files = ["--trajectory", str(tmp_path / "md.traj"), "--log", str(tmp_path / "md.log"), "--quiet"]
    assert main(["md", str(start), model, "--steps", "1", "--device", "cpu", *files]) == 0
    assert seen == ["cpu"]
    assert main(["md", str(start), model, "--device", "tpu", *files]) == 2
    assert "--device 'tpu': must be cpu, cuda or cuda:N" in capsys.readouterr().err
    if torch.cuda.is_available():
        assert main(["md", str(start), model, "--steps", "2", "--device", "cuda", *files]) == 0
        assert seen[-1] == "cuda" and "on cuda" in capsys.readouterr().out
    else:
        assert main(["md", str(start), model, "--device", "cuda", *files]) == 2
        assert "torch sees no CUDA device" in capsys.readouterr().err


# --------------------------------------------- item 9: configs that run code
MARKER_MODULE = """
from pathlib import Path
Path(__file__).with_name("imported.txt").write_text("the config ran code")


class Oracle:
    def __init__(self):
        raise ValueError("oracle constructed")
"""


def _al_config(tmp_path: Path, oracle: str) -> Path:
    (tmp_path / "nearsight_marker_oracle.py").write_text(MARKER_MODULE)
    write(tmp_path / "seeds.xyz", water())
    cfg = tmp_path / "al.yaml"
    cfg.write_text(f"seeds: seeds.xyz\noutput_dir: run\noracle: {oracle}\n")
    return cfg


def test_python_oracle_needs_an_explicit_opt_in(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _al_config(tmp_path, "{type: python, object: 'nearsight_marker_oracle:Oracle'}")
    assert main(["active-learn", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nearsight active-learn: error: oracle.type = 'python'")
    assert "--allow-python-oracle" in err[0]
    assert not (tmp_path / "imported.txt").exists() and not (tmp_path / "run").exists()
    with pytest.raises(ActiveLearningConfigError, match="allow_python_oracle=True"):
        make_oracle(load_al_config(cfg)["oracle"])
    # with the flag the object is imported and called (here its constructor fails on purpose)
    assert main(["active-learn", str(cfg), "--allow-python-oracle"]) == 2
    assert "oracle constructed" in capsys.readouterr().err
    assert (tmp_path / "imported.txt").exists()


def test_yaml_python_tags_are_one_clear_error(tmp_path, capsys):
    marker = tmp_path / "touched"
    cfg = _al_config(tmp_path, f"!!python/object/apply:os.system ['touch {marker}']")
    assert main(["active-learn", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nearsight active-learn: error: {str(cfg)!r}: invalid YAML")
    assert "python/object/apply:os.system" in err and not marker.exists()
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ActiveLearningConfigError, match="top level must be a mapping, got list"):
        load_al_config(bad)
