"""``nearsight surface-hop`` and :mod:`nearsight.simulate.swarm_run`: config validation, Tully 1
branching near the exact result, a bit-identical resume after a kill, atomic outputs, the CLI's
exit status and one-line errors, harmonic Wigner sampling, and the molecular branch on a fake
adapter with the interface of ``nearsight.nonadiabatic.molecule.MolecularDiabatic``."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from nearsight.cli.main import main
from nearsight.cli.surface_hop import load_surface_hop_config
from nearsight.simulate.swarm_run import (
    AU_TIME_FS,
    ferretti_problem,
    harmonic_modes,
    run_swarms,
    tully_problem,
    wigner_sample,
)

pytestmark = pytest.mark.usefixtures("one_thread")
TULLY = {
    "potential": {"analytic": "tully1"},
    "initial": {"state": 0, "x0": -15.0, "k0": 20.0, "sigma_x": 5.0},
    "trajectories": 8,
    "swarm_size": 4,
    "timestep_au": 10.0,
    "steps": 30,
    "seed": 0,
    "output_dir": "out",
}


def _config(tmp_path: Path, **changes) -> Path:
    config = {**TULLY, "output_dir": str(tmp_path / "run"), **changes}
    config = {k: v for k, v in config.items() if v is not ...}  # ...: drop the key
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"speed": 1}, "unknown key(s) ['speed']"),
        ({"trajectories": "100"}, "trajectories = '100': must be an integer"),
        ({"trajectories": True}, "trajectories = True: must be an integer"),
        ({"swarm_size": 0}, "swarm_size = 0: must be positive"),
        ({"frustrated": "ignore"}, "frustrated = 'ignore'"),
        ({"decoherence": -0.1}, "decoherence = -0.1: must be positive"),
        ({"timestep_fs": 0.1}, "exactly one of ['timestep_au', 'timestep_fs']"),
        ({"steps": ..., "time_fs": 5.0, "time_au": 100.0}, "exactly one of ['steps', 'time_fs', 'time_au']"),
        ({"potential": {"analytic": "tully4"}}, "potential.analytic = 'tully4'"),
        ({"potential": {"analytic": "tully1", "model": "m.pt"}}, "exactly one of ['analytic', 'model']"),
        ({"potential": {"model": "missing.pt", "structure": "s.xyz"}}, "potential.model ="),
        ({"initial": {"state": 0, "x0": -15.0, "k0": 20.0}}, "missing key initial.sigma_x"),
        (
            {"initial": {**TULLY["initial"], "temperature_K": 0}},
            "unknown key(s) ['temperature_K'] in initial",
        ),
        ({"initial": {**TULLY["initial"], "state": -1}}, "initial.state = -1: must be >= 0"),
        ({"initial": {**TULLY["initial"], "sigma_x": "wide"}}, "initial.sigma_x = 'wide'"),
        ({"output_dir": ...}, "missing key 'output_dir'"),
    ],
)
def test_config_errors_name_the_file_key_and_value(tmp_path, changes, message):
    path = _config(tmp_path, **changes)
    with pytest.raises(ValueError) as info:
        load_surface_hop_config(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_example_config_and_femtoseconds(tmp_path):
    config = load_surface_hop_config(Path(__file__).parents[1] / "examples" / "surface_hop_tully1.yaml")
    assert config["steps"] == 800 and config["swarm_size"] == 250 and config["decoherence"] is None
    config = load_surface_hop_config(
        _config(tmp_path, timestep_au=..., timestep_fs=0.5, steps=..., time_fs=10.0)
    )
    assert config["timestep_au"] == pytest.approx(0.5 / AU_TIME_FS) and config["steps"] == 20


def test_tully1_upper_transmission_near_exact(tmp_path):
    """k0 = 20: exact upper-state transmission 0.493 (benchmarks/results/tully_exact_model1.json).
    400 trajectories: standard error 0.025, so ±0.1 is a 4σ band; without hops it would be 0."""
    result = run_swarms(
        tully_problem(1, -15.0, 20.0, 5.0), tmp_path, trajectories=400, swarm_size=200,
        timestep_au=10.0, steps=400, record_every=20,
    )  # fmt: skip
    outcomes = result.outcomes()
    assert outcomes["transmitted_1"] == pytest.approx(0.493, abs=0.1)
    assert outcomes["reflected_0"] + outcomes["reflected_1"] == 0.0
    assert float(result.electronic[-1, 1]) == pytest.approx(0.493, abs=0.1)
    assert torch.allclose(result.active.sum(1), torch.ones(len(result.time_au), dtype=torch.float64))
    assert torch.allclose(result.electronic.sum(1), torch.ones(len(result.time_au), dtype=torch.float64))
    assert result.total_hops == int(result.hops.sum()) > 100


class Kill(RuntimeError):
    pass


def _kill_at(swarm: int, step: int):
    def callback(s: int, k: int) -> None:
        if (s, k) == (swarm, step):
            raise Kill(f"killed at swarm {s}, step {k}")

    return callback


@pytest.mark.parametrize("kill", [(1, 23), (2, 0)])
def test_resume_after_a_kill_is_bit_identical(tmp_path, kill):
    problem = tully_problem(1, -6.0, 20.0, 1.0)
    options = {
        "trajectories": 30, "swarm_size": 12, "timestep_au": 10.0, "steps": 60, "decoherence": 0.1,
        "frustrated": "reverse", "record_every": 7, "checkpoint_every": 9,
    }  # fmt: skip
    whole = run_swarms(problem, tmp_path / "whole", **options)
    swarm, step = kill
    with pytest.raises(Kill):
        run_swarms(
            problem, tmp_path / "killed", callback=_kill_at(swarm, step or options["steps"]), **options
        )
    assert not (tmp_path / "killed" / "summary.json").exists()
    running = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["running"]
    assert (running["swarm"], running["step"]) == (swarm, 18 if step else 54)  # resumed mid-swarm
    resumed = run_swarms(problem, tmp_path / "killed", resume=True, **options)
    assert whole.total_hops > 0
    for name in ("time_au", "active", "electronic", "final_state", "final_q", "hops"):
        assert torch.equal(getattr(whole, name), getattr(resumed, name)), name
    assert (whole.total_hops, whole.frustrated) == (resumed.total_hops, resumed.frustrated)
    for name in ("populations.csv", "trajectories.csv", "summary.json"):
        assert (tmp_path / "whole" / name).read_text() == (tmp_path / "killed" / name).read_text()
    with pytest.raises(ValueError, match=r"other settings \(seed: 0 -> 1\)"):
        run_swarms(problem, tmp_path / "killed", resume=True, **{**options, "seed": 1})


def test_swarms_do_not_depend_on_the_swarms_before_them(tmp_path):
    problem = tully_problem(1, -6.0, 20.0, 1.0)
    options = {"swarm_size": 10, "timestep_au": 10.0, "steps": 40}
    two = run_swarms(problem, tmp_path / "a", trajectories=20, **options)
    one = run_swarms(problem, tmp_path / "b", trajectories=10, **options)
    assert torch.equal(two.final_q[:10], one.final_q) and torch.equal(two.hops[:10], one.hops)
    assert not torch.equal(two.final_q[10:], one.final_q)


def test_cli_run_outputs_refusal_resume_and_overwrite(tmp_path, capsys):
    path, out = _config(tmp_path), tmp_path / "run"
    assert main(["surface-hop", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "transmitted" in printed and "final populations" in printed
    assert {p.name for p in out.iterdir()} == {
        "checkpoint.pt",
        "populations.csv",
        "trajectories.csv",
        "summary.json",
    }
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["done"]["swarms"] == 2 and checkpoint["running"] is None
    rows = (out / "populations.csv").read_text().splitlines()
    assert rows[0] == "time_au,time_fs,active_0,active_1,electronic_0,electronic_1" and len(rows) == 32
    time_au, time_fs = map(float, rows[-1].split(",")[:2])
    assert time_au == 300.0 and time_fs == pytest.approx(300 * AU_TIME_FS)
    trajectories = (out / "trajectories.csv").read_text().splitlines()
    assert trajectories[0] == "trajectory,final_state,hops,q_0,outcome" and len(trajectories) == 9

    assert main(["surface-hop", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nearsight surface-hop: error: output directory") and "finished run" in err
    assert err.count("\n") == 1
    assert main(["surface-hop", str(path), "--resume"]) == 0
    assert "final populations" in capsys.readouterr().out
    assert main(["surface-hop", str(path), "--overwrite", "--resume"]) == 2
    assert "pick one" in capsys.readouterr().err
    assert main(["surface-hop", str(path), "--overwrite", "--output-dir", str(tmp_path / "other")]) == 0
    assert (tmp_path / "other" / "summary.json").is_file()


def test_cli_state_out_of_range_is_one_line(tmp_path, capsys):
    path = _config(tmp_path, initial={**TULLY["initial"], "state": 2})
    assert main(["surface-hop", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "nearsight surface-hop: error: initial.state = 2: must be 0 .. 1 (adiabatic index, 0 = lowest)\n"
    )


def test_ferretti_problem_samples_and_runs(tmp_path):
    problem = ferretti_problem([3.5, 0.0], [0.0, 0.0])
    q, p = problem.sample(2000, torch.Generator().manual_seed(0))
    sigma = torch.tensor([(4 * 0.02 * 20000.0) ** -0.25, (4 * 0.10 * 6667.0) ** -0.25], dtype=torch.float64)
    assert torch.allclose(q.std(0), sigma, rtol=0.05) and torch.allclose(p.std(0), 1 / (2 * sigma), rtol=0.05)
    result = run_swarms(problem, tmp_path, trajectories=4, swarm_size=4, timestep_au=5.0, steps=5, state=1)
    assert result.outcomes() is None and result.final_q.shape == (4, 2)
    assert (tmp_path / "trajectories.csv").read_text().splitlines()[
        0
    ] == "trajectory,final_state,hops,q_0,q_1"


class _Harmonic:
    """Two diabatic states; V_11 = ½ Σ k_d (q_d − c_d)², V_22 = V_11 + 0.05, V_12 = 0.001."""

    def __init__(self, k: torch.Tensor, centre: torch.Tensor) -> None:
        self.k, self.centre = k, centre

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        v = 0.5 * (self.k * (q - self.centre) ** 2).sum(1)
        c = torch.full_like(v, 0.001)
        return torch.stack([torch.stack([v, c], -1), torch.stack([c, v + 0.05], -1)], -2)


@pytest.mark.parametrize("temperature_K", [0.0, 3000.0])
def test_wigner_sampling_of_a_harmonic_potential(temperature_K):
    k, m = (
        torch.tensor([0.5, 0.02, 0.1], dtype=torch.float64),
        torch.tensor([1.0, 2000.0, 6000.0], dtype=torch.float64),
    )
    centre = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    potential = _Harmonic(k, centre)
    omega = (k / m).sqrt()
    q, p = wigner_sample(
        potential, centre, m, 40000, temperature_K, torch.Generator().manual_seed(1), remove_rigid=False
    )
    s = 1.0 if temperature_K == 0 else 1 / torch.tanh(omega / (2 * 3.166811563455546e-06 * temperature_K))
    # constant gap and coupling: the lower state is V_11 shifted by a constant; 3 % ≈ 4σ at 40000 samples
    assert torch.allclose((p**2 / (2 * m)).mean(0), s * omega / 4, rtol=0.03)  # ħω/4 per mode at 0 K
    assert torch.allclose(q.var(0), s / (2 * m * omega), rtol=0.03)
    assert torch.allclose(q.mean(0), centre, atol=4 * float((s / (2 * m * omega)).sqrt().max()) / 200)


class _Triatomic:
    """Three atoms joined by springs (a bent molecule at ``positions``, bohr), with the interface of
    ``MolecularDiabatic``: ``masses`` [9], ``q0`` [9], ``__call__(q [T, 9]) -> V_d [T, 2, 2]``."""

    def __init__(self, positions: torch.Tensor, masses: torch.Tensor) -> None:
        self.q0 = positions.reshape(-1).to(torch.float64)
        self.masses = masses.to(torch.float64).repeat_interleave(3)
        self.pairs = [(0, 1), (0, 2), (1, 2)]
        self.k = torch.tensor([0.4, 0.4, 0.1], dtype=torch.float64)
        self.r0 = self._distances(self.q0[None])[0]

    def _distances(self, q: torch.Tensor) -> torch.Tensor:
        r = q.reshape(q.shape[0], -1, 3)
        return torch.stack([(r[:, i] - r[:, j]).norm(dim=-1) for i, j in self.pairs], -1)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        d = self._distances(q) - self.r0
        v = 0.5 * (self.k * d**2).sum(-1)
        c = 0.01 * (d[:, 0] - d[:, 1])
        return torch.stack([torch.stack([v, c], -1), torch.stack([c, v + 0.02 - 0.05 * d[:, 2]], -1)], -2)


def _water() -> _Triatomic:
    positions = torch.tensor([[0.0, 0.0, 0.0], [1.8, 0.0, 0.0], [-0.45, 1.74, 0.0]], dtype=torch.float64)
    return _Triatomic(positions, torch.tensor([16.0, 1.0, 1.0]) * 1822.888486)


def test_wigner_sampling_removes_rigid_modes():
    molecule = _water()
    omega, modes = harmonic_modes(molecule, molecule.q0, molecule.masses)
    assert omega.shape == (3,) and modes.shape == (9, 3)
    q, p = wigner_sample(molecule, molecule.q0, molecule.masses, 20000, 0.0, torch.Generator().manual_seed(2))
    r0, momenta = molecule.q0.reshape(3, 3), p.reshape(-1, 3, 3)
    centre = (molecule.masses.reshape(3, 3)[:, :1] * r0).sum(0) / molecule.masses.reshape(3, 3)[:, 0].sum()
    assert float(momenta.sum(1).abs().max()) < 1e-10  # no translation
    assert (
        float(torch.linalg.cross((r0 - centre).expand_as(momenta), momenta, dim=-1).sum(1).abs().max())
        < 1e-10
    )  # no rotation
    kinetic = (p**2 / (2 * molecule.masses)).sum(1).mean()
    assert float(kinetic) == pytest.approx(float(omega.sum()) / 4, rel=0.03)  # ħω/4 per mode


def test_not_a_minimum_is_refused():
    molecule = _water()
    shifted = molecule.q0 + 0.0
    molecule.k = torch.tensor([0.4, 0.4, -0.3], dtype=torch.float64)
    with pytest.raises(ValueError, match="not a minimum"):
        harmonic_modes(molecule, shifted, molecule.masses)


def test_molecular_branch_through_the_cli(tmp_path, monkeypatch, capsys):
    from ase import Atoms
    from ase.io import write

    molecule = _water()
    bohr = 0.529177210903
    write(tmp_path / "water.xyz", Atoms("OH2", positions=(molecule.q0.reshape(3, 3) * bohr).numpy()))
    (tmp_path / "model.pt").write_bytes(b"not read by the fake adapter")
    seen = {}

    class MolecularDiabatic(_Triatomic):
        def __init__(self, model_path, atoms) -> None:
            seen["model"], seen["symbols"] = model_path, atoms.get_chemical_symbols()
            positions = torch.tensor(atoms.get_positions(), dtype=torch.float64) / bohr
            super().__init__(positions, torch.tensor(atoms.get_masses()) * 1822.888486)

    monkeypatch.setitem(
        sys.modules,
        "nearsight.nonadiabatic.molecule",
        types.SimpleNamespace(MolecularDiabatic=MolecularDiabatic),
    )  # noqa: E501
    path = _config(
        tmp_path, potential={"model": "model.pt", "structure": "water.xyz"}, initial={"state": 1, "temperature_K": 0},
        timestep_au=..., timestep_fs=0.25, steps=..., time_fs=5.0, trajectories=6, swarm_size=6,
    )  # fmt: skip
    assert main(["surface-hop", str(path)]) == 0
    assert seen == {"model": str(tmp_path / "model.pt"), "symbols": ["O", "H", "H"]}
    assert "electronic" in capsys.readouterr().out
    rows = (tmp_path / "run" / "populations.csv").read_text().splitlines()
    assert len(rows) == 22 and rows[1].startswith("0.0,0.0,0.0,1.0,")  # 20 steps; state 1 at t = 0
    assert float(rows[-1].split(",")[1]) == pytest.approx(5.0)
    assert (tmp_path / "run" / "trajectories.csv").read_text().splitlines()[
        0
    ] == "trajectory,final_state,hops"

    monkeypatch.setitem(sys.modules, "nearsight.nonadiabatic.molecule", None)  # the adapter missing
    assert main(["surface-hop", str(path), "--overwrite"]) == 2
    assert "potential.model needs nearsight.nonadiabatic.molecule" in capsys.readouterr().err
