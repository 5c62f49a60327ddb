"""Umbrella sampling + MBAR and well-tempered metadynamics against exact free energies; resume; errors; CLI.

Exact profiles come from Boltzmann quadrature (``exact_profile``) on the same bins.  The surfaces are
sampled by N independent copies of the particle ("walkers", one atom each) in one structure, so each
ASE step gives N samples (one walker would need about N times the steps).  The tolerances
are the issue's: 0.2 k_BT for umbrella + MBAR, 0.5 k_BT for metadynamics, on the barrier, the
difference of the two deepest minima and the difference of the basins.  Seeds 0-11 of these exact
configurations gave largest errors (standard deviations) of
  umbrella, double well      0.11 k_BT (0.04-0.06)   MBAR's own 1σ 0.06 k_BT
  umbrella, Müller-Brown     0.10 k_BT (0.04-0.06)   MBAR's own 1σ 0.06 k_BT
  metadynamics, double well  0.22 k_BT (0.08-0.12)   -γ/(γ-1) V, basins: 0.22 k_BT
  metadynamics, Müller-Brown 0.23 k_BT (0.05-0.11)   (bias on x and y, reweighted onto s)
so each tolerance is more than 3 standard deviations of its estimate.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units

from nearsight.sampling import (
    Position,
    UmbrellaWindow,
    WellTemperedMetadynamics,
    bias_profile,
    load_windows,
    mbar_profile,
    reweighted_profile,
    run_metadynamics,
    run_umbrella,
)
from nearsight.sampling.toy_surfaces import DoubleWell, MuellerBrown, exact_profile

T = 300.0
KT = units.kB * T
DW = {"barrier": 0.065, "tilt": 0.013, "k_perp": 1.0}  # 2.5 k_BT barrier, wells 1 k_BT apart
DW_EDGES = np.linspace(-1.3, 1.3, 14)  # 0.2 Å bins; the barrier top lies in the bin around 0
MB_SCALE = 0.00086  # eV per Müller-Brown unit: k_BT = 30 units at 300 K
MB_DIRECTION = (0.5, -math.sqrt(3) / 2, 0.0)  # s = (x - √3 y)/2: monotonic along A -> C -> B
MB_EDGES = np.linspace(-1.9, 0.7, 27)  # 0.1 Å bins
MB_MINIMA = np.array([[-0.558, 1.442, 0.0], [0.623, 0.028, 0.0], [-0.050, 0.467, 0.0]])  # A, B, C


def exact_double_well() -> np.ndarray:
    calc = DoubleWell(**DW)
    return exact_profile(calc.energy_x, lambda x: x, [np.linspace(-3, 3, 30001)], DW_EDGES, T) / KT


def exact_mueller_brown() -> np.ndarray:
    calc = MuellerBrown(MB_SCALE)
    grids = [np.linspace(-2.0, 1.5, 701), np.linspace(-0.7, 2.3, 601)]
    cv = lambda x, y: MB_DIRECTION[0] * x + MB_DIRECTION[1] * y  # noqa: E731
    return exact_profile(calc.energy_xy, cv, grids, MB_EDGES, T) / KT


def measures(f: np.ndarray, exact: np.ndarray, edges: np.ndarray) -> dict[str, float]:
    """Barrier F(top) - F(A), ΔF = F(B) - F(A) between the two deepest minima of the exact profile, and
    ΔF between the basins (the bins beyond the barriers on either side), all in k_BT."""
    interior = [i for i in range(1, len(exact) - 1) if exact[i] <= exact[i - 1] and exact[i] <= exact[i + 1]]
    a, b = sorted(sorted(interior, key=lambda i: exact[i])[:2])
    tops = [i for i in range(a + 1, b) if exact[i] >= exact[i - 1] and exact[i] >= exact[i + 1]]
    top = max(tops, key=lambda i: exact[i])
    log_width = np.log(np.diff(edges))

    def basin(lo: int, hi: int) -> float:
        x = -f[lo:hi] + log_width[lo:hi]
        return -float(x.max() + np.log(np.exp(x - x.max()).sum()))

    return {
        "barrier": float(f[top] - f[a]),
        "dF_minima": float(f[b] - f[a]),
        "dF_basins": basin(max(tops) + 1, len(f)) - basin(0, min(tops)),
    }


def errors(f: np.ndarray, exact: np.ndarray, edges: np.ndarray) -> dict[str, float]:
    est, ref = measures(f, exact, edges), measures(exact, exact, edges)
    return {k: round(est[k] - ref[k], 4) for k in ref}


def walkers(n: int, starts: np.ndarray, direction) -> tuple[Atoms, list[Position]]:
    atoms = Atoms(f"H{n}", positions=[starts[i % len(starts)] for i in range(n)])
    return atoms, [Position(i, direction) for i in range(n)]


def umbrella_double_well(seed: int, out: Path) -> tuple[object, list]:
    atoms, cvs = walkers(32, np.array([[-1.0, 0, 0]]), "x")
    windows = run_umbrella(
        atoms, DoubleWell(**DW), cvs[0], np.linspace(-1.2, 1.2, 7), 0.31, walkers=cvs[1:], steps=800,
        equilibration_steps=50, timestep_fs=6.0, temperature_K=T, friction_per_fs=0.05, seed=seed,
        output_dir=out,
    )  # fmt: skip
    return mbar_profile(windows, T, DW_EDGES), windows


def umbrella_mueller_brown(seed: int, out: Path) -> tuple[object, list]:
    atoms, cvs = walkers(32, MB_MINIMA[:1], MB_DIRECTION)
    windows = run_umbrella(
        atoms, MuellerBrown(MB_SCALE), cvs[0], np.linspace(-1.9, 0.7, 11), 0.65, walkers=cvs[1:], steps=2000,
        equilibration_steps=50, timestep_fs=3.5, temperature_K=T, friction_per_fs=0.05, seed=seed,
        output_dir=out,
    )  # fmt: skip
    return mbar_profile(windows, T, MB_EDGES), windows


def test_umbrella_mbar_double_well(tmp_path):
    profile, windows = umbrella_double_well(0, tmp_path)
    exact = exact_double_well()
    err = errors(profile.free_energy / KT, exact, DW_EDGES)
    assert max(abs(e) for e in err.values()) < 0.2, err  # ERRORS seed 0: see the module docstring
    assert profile.diagnostics["min_neighbour_overlap"] > 0.05
    assert np.nanmax(profile.uncertainty / KT) < 0.1  # MBAR's 1σ: the tolerance is > 2σ of a difference
    # unbiasing matters: the pooled histogram of the biased samples is far from F
    pooled = np.concatenate([w.cv.ravel() for w in windows])
    counts = np.histogram(pooled, DW_EDGES)[0]
    naive = -np.log(counts / counts.max())
    assert max(abs(e) for e in errors(naive, exact, DW_EDGES).values()) > 1.0


def test_umbrella_mbar_mueller_brown(tmp_path):
    profile, _ = umbrella_mueller_brown(0, tmp_path)
    err = errors(profile.free_energy / KT, exact_mueller_brown(), MB_EDGES)
    assert max(abs(e) for e in err.values()) < 0.2, err
    exact = exact_mueller_brown()
    assert measures(exact, exact, MB_EDGES)["dF_minima"] > 1.0  # a real difference


def metad_double_well(seed: int, out: Path):
    atoms, cvs = walkers(16, np.array([[-1.0, 0, 0], [1.0, 0, 0]]), "x")
    bias = WellTemperedMetadynamics(
        cvs[0], 0.3 * KT, 0.1, 5.0, T, 20, walkers=[[c] for c in cvs[1:]], grid=[(-3.5, 3.5, 350)]
    )
    run = run_metadynamics(
        atoms, DoubleWell(**DW), bias, steps=4000, timestep_fs=6.0, temperature_K=T, friction_per_fs=0.05,
        seed=seed, output_dir=out, checkpoint_every=1000,
    )  # fmt: skip
    return run, reweighted_profile(run, DW_EDGES), bias_profile(bias, DW_EDGES)


def metad_mueller_brown(
    seed: int, out: Path, steps: int = 4000, gamma: float = 3.0, discard: float = 0.3, n: int = 32
):
    """Bias on (x, y), reweighted onto s: two CVs, and a CV that was not biased."""
    atoms = Atoms(f"H{n}", positions=[MB_MINIMA[i % 3] for i in range(n)])
    xy = [[Position(i, "x"), Position(i, "y")] for i in range(n)]
    bias = WellTemperedMetadynamics(
        xy[0], 0.3 * KT, 0.1, gamma, T, 20, walkers=xy[1:], grid=[(-3.5, 2.5, 200), (-2.0, 4.5, 217)]
    )
    run = run_metadynamics(
        atoms, MuellerBrown(MB_SCALE), bias, steps=steps, timestep_fs=3.5, temperature_K=T,
        friction_per_fs=0.05, seed=seed, output_dir=out, checkpoint_every=1000,
        extra_cvs=[[Position(i, MB_DIRECTION)] for i in range(n)],
    )  # fmt: skip
    return run, reweighted_profile(run, MB_EDGES, cv="extra:0", discard_fraction=discard)


def test_metadynamics_double_well(tmp_path):
    run, reweighted, from_bias = metad_double_well(0, tmp_path)
    exact = exact_double_well()
    err = errors(reweighted.free_energy / KT, exact, DW_EDGES)
    assert max(abs(e) for e in err.values()) < 0.5, err
    # -γ/(γ-1) V: hills of width σ smooth the wells' bottoms, so the basin difference is the robust measure
    assert abs(errors(from_bias.free_energy / KT, exact, DW_EDGES)["dF_basins"]) < 0.5
    assert np.mean(run.bias.heights[-16:]) < 0.2 * run.bias.height  # well-tempered: the hills shrink


def test_metadynamics_mueller_brown_two_cvs(tmp_path):
    _, reweighted = metad_mueller_brown(0, tmp_path)
    err = errors(reweighted.free_energy / KT, exact_mueller_brown(), MB_EDGES)
    assert max(abs(e) for e in err.values()) < 0.5, err


class Killed(Exception):
    """Stands for a kill: raised from the progress hook once some work is on disk."""


def small_umbrella(out: Path, resume: bool = False, progress=None, seed: int = 3) -> list[UmbrellaWindow]:
    atoms, cvs = walkers(4, np.array([[-1.0, 0, 0]]), "x")
    return run_umbrella(
        atoms, DoubleWell(**DW), cvs[0], np.linspace(-1.2, 1.2, 5), 0.31, walkers=cvs[1:], steps=60,
        equilibration_steps=10, timestep_fs=6.0, temperature_K=T, friction_per_fs=0.05, seed=seed,
        output_dir=out, resume=resume, progress=progress,
    )  # fmt: skip


def test_umbrella_resumes_after_a_kill_to_the_same_profile(tmp_path):
    whole = small_umbrella(tmp_path / "whole")

    def kill_after_window_2(line: str) -> None:
        if line.startswith("window 2 "):
            raise Killed

    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        small_umbrella(killed, progress=kill_after_window_2)
    assert sorted(p.name for p in killed.glob("window_*")) == [f"window_00{i}.npz" for i in range(3)]
    (killed / ".window_003.npz.x1y2.tmp").write_bytes(b"half a file")  # what a kill mid-write leaves
    with pytest.raises(ValueError, match="already holds a run .*pass resume=True"):
        small_umbrella(killed)
    with pytest.raises(ValueError, match="cannot resume, seed was 3 and is now 4"):
        small_umbrella(killed, resume=True, seed=4)
    lines: list[str] = []
    resumed = small_umbrella(killed, resume=True, progress=lines.append)
    assert [line.split()[1] for line in lines] == ["3", "4"]  # only the unfinished windows ran
    for a, b, c in zip(whole, resumed, load_windows(killed)):
        np.testing.assert_array_equal(a.cv, b.cv)
        np.testing.assert_array_equal(a.cv, c.cv)
    profiles = [mbar_profile(w, T, DW_EDGES) for w in (whole, resumed)]
    np.testing.assert_array_equal(profiles[0].free_energy, profiles[1].free_energy)
    np.testing.assert_array_equal(profiles[0].uncertainty, profiles[1].uncertainty)


def small_metad(out: Path, resume: bool = False, progress=None):
    atoms, cvs = walkers(4, np.array([[-1.0, 0, 0], [1.0, 0, 0]]), "x")
    bias = WellTemperedMetadynamics(
        cvs[0], 0.3 * KT, 0.1, 5.0, T, 10, walkers=[[c] for c in cvs[1:]], grid=[(-3.5, 3.5, 350)]
    )
    return run_metadynamics(
        atoms, DoubleWell(**DW), bias, steps=300, timestep_fs=6.0, temperature_K=T, friction_per_fs=0.05,
        seed=5, output_dir=out, checkpoint_every=100, resume=resume, progress=progress,
    )  # fmt: skip


def test_metadynamics_resumes_from_its_checkpoint_bit_identically(tmp_path):
    whole = small_metad(tmp_path / "whole")

    def kill_after_step_200(line: str) -> None:
        if line.startswith("step 200/"):
            raise Killed

    with pytest.raises(Killed):
        small_metad(tmp_path / "killed", progress=kill_after_step_200)
    resumed = small_metad(tmp_path / "killed", resume=True)
    assert whole.bias.n_hills == resumed.bias.n_hills == 4 * 30
    np.testing.assert_array_equal(whole.bias.heights, resumed.bias.heights)
    np.testing.assert_array_equal(whole.cv, resumed.cv)
    np.testing.assert_array_equal(whole.bias_energy, resumed.bias_energy)
    np.testing.assert_array_equal(whole.n_hills, resumed.n_hills)
    again = small_metad(tmp_path / "killed", resume=True)  # a finished run: loaded, nothing rerun
    np.testing.assert_array_equal(again.cv, whole.cv)


def test_windows_that_do_not_overlap_are_named():
    rng = np.random.default_rng(0)
    k = 40.0  # eV/Å²: each window's width is sqrt(k_BT/k) = 0.025 Å
    centres = [0.0, 0.05, 0.1, 1.0]
    windows = [
        UmbrellaWindow(i, c, k, c + np.sqrt(KT / k) * rng.normal(size=400)) for i, c in enumerate(centres)
    ]
    with pytest.raises(
        ValueError, match=r"windows 2 \(centre 0.1\) and 3 \(centre 1\) do not overlap: MBAR overlap"
    ):
        mbar_profile(windows, T, 20)
    with pytest.warns(RuntimeWarning, match=r"windows 2 \(centre 0.1\) and 3 \(centre 1\)"):
        profile = mbar_profile(windows, T, 20, on_poor_overlap="warn")
    overlap = profile.diagnostics["overlap_matrix"]
    assert overlap[2, 3] < 1e-6 < 0.03 < overlap[0, 1]
    assert profile.diagnostics["min_neighbour_overlap"] < 1e-6


def test_runs_refuse_a_bias_on_an_atom_that_does_not_exist(tmp_path):
    from nearsight.sampling import Distance

    atoms = Atoms("H3", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match=r"atom index 10 does not exist in a structure of 3 atoms"):
        run_umbrella(atoms, DoubleWell(), Distance(0, 10), [1.0], 1.0, steps=5, output_dir=tmp_path / "u")
    bias = WellTemperedMetadynamics(Position(10), 0.01, 0.1, 5.0, T, 10)
    with pytest.raises(ValueError, match=r"Position\(atom=10.*atom index 10 does not exist .* 3 atoms"):
        run_metadynamics(atoms, DoubleWell(), bias, steps=5, temperature_K=T, output_dir=tmp_path / "m")
    assert not (tmp_path / "u").exists() and not (tmp_path / "m").exists()


def sampling_cli(argv: list[str]) -> int:
    from nearsight.cli.sampling import add_sampling_parsers

    parser = argparse.ArgumentParser(prog="nearsight")
    add_sampling_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def write_yaml(path: Path, config: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_umbrella_and_metad_on_a_toy_surface(tmp_path, capsys):
    md = {"timestep_fs": 6.0, "temperature_K": T, "friction_per_fs": 0.05, "seed": 1}
    toy = {"surface": "double_well", **DW}
    config = {
        "toy": toy, "cv": {"type": "position", "atom": 0, "direction": "x"}, "md": md,
        "umbrella": {"centres": {"start": -1.2, "stop": 1.2, "num": 7}, "k": 0.31, "steps": 150,
                     "equilibration_steps": 20, "bins": {"start": -1.3, "stop": 1.3, "num": 14},
                     "min_overlap": 0.01},
        "output_dir": str(tmp_path / "umbrella"),
    }  # fmt: skip
    path = write_yaml(tmp_path / "umbrella.yaml", config)
    assert sampling_cli(["umbrella", str(path)]) == 0
    out = capsys.readouterr().out
    assert "window 6 (7/7)" in out and "MBAR: 7 windows" in out
    report = json.loads((tmp_path / "umbrella" / "profile.json").read_text())
    assert (
        report["method"] == "mbar"
        and len(report["free_energy_kT"]) == 13
        and min(report["free_energy_kT"]) == 0
    )
    assert (tmp_path / "umbrella" / "profile.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="already holds a run"):
        sampling_cli(["umbrella", str(path)])
    assert sampling_cli(["umbrella", str(path), "--resume"]) == 0  # every window loaded, none rerun
    assert "window" not in capsys.readouterr().out.split("MBAR")[0]
    assert json.loads((tmp_path / "umbrella" / "profile.json").read_text()) == report

    metad = {
        "height": 0.008, "sigma": 0.1, "bias_factor": 5, "pace": 20, "steps": 400, "checkpoint_every": 200,
        "grid": [[-3.5, 3.5, 350]], "bins": {"start": -1.3, "stop": 1.3, "num": 14},
    }  # fmt: skip
    config = {
        "toy": toy,
        "cv": [config["cv"]],
        "md": md,
        "metad": metad,
        "output_dir": str(tmp_path / "metad"),
    }
    assert sampling_cli(["metad", str(write_yaml(tmp_path / "metad.yaml", config))]) == 0
    report = json.loads((tmp_path / "metad" / "profile.json").read_text())
    assert set(report) == {"reweighted", "bias"} and report["bias"]["diagnostics"]["n_hills"] == 20
    assert (tmp_path / "metad" / "hills.png").exists() and (tmp_path / "metad" / "state.npz").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"umbrela": {}}, "unknown key 'umbrela' in the config"),
        ({"umbrella": {"centres": [1.0], "k": 1.0, "steps": 10, "kk": 1}}, "unknown key 'kk' in umbrella"),
        ({"md": {"temperature": 300}}, "unknown key 'temperature' in md"),
        ({"cv": {"type": "distance", "atoms": [0, 1], "r0": 1}}, "cv: unknown key 'r0' for type 'distance'"),
        ({"toy": {"surface": "double_well", "scale": 1.0}}, "unknown key 'scale' in toy"),
        ({"umbrella": {"centres": [1.0], "k": -1.0, "steps": 10}}, r"umbrella.k = -1.0: must be positive"),
        ({"model": "missing.pt"}, "give exactly one of 'model'"),
    ],
)
def test_cli_config_errors_name_the_key(tmp_path, change, message):
    config = {
        "toy": {"surface": "double_well"}, "cv": {"type": "position", "atom": 0},
        "umbrella": {"centres": [1.0], "k": 1.0, "steps": 10}, "output_dir": str(tmp_path / "out"), **change,
    }  # fmt: skip
    path = write_yaml(tmp_path / "bad.yaml", config)
    with pytest.raises(ValueError, match=f"{path}: .*{message}"):
        sampling_cli(["umbrella", str(path)])


def test_cli_umbrella_with_a_model_file(tmp_path, capsys):
    import torch
    from ase.build import molecule

    from nearsight.models.io import save_model
    from nearsight.training.config import validate_config
    from nearsight.training.trainer import build_model

    model_cfg = {
        "cutoff": 3.0, "n_radial": 4, "n_angular_eta": 1, "n_angle_sections": 2, "n_angular_shifts": 2,
        "hidden": [8],
    }  # fmt: skip
    torch.manual_seed(0)
    model = build_model(
        validate_config({"data": {"train": "x"}, "model": model_cfg})["model"], [1, 8]
    ).double()
    save_model(model, tmp_path / "model.pt")
    molecule("H2O").write(tmp_path / "water.xyz")
    config = {
        "structure": "water.xyz", "model": "model.pt", "cv": {"type": "distance", "atoms": [0, 1]},
        "md": {"timestep_fs": 0.25, "temperature_K": T, "friction_per_fs": 0.02},
        "umbrella": {"centres": [0.96, 1.0], "k": 20.0, "steps": 20, "bins": 8, "min_overlap": 0.0},
        "output_dir": str(tmp_path / "run"),
    }  # fmt: skip
    assert sampling_cli(["umbrella", str(write_yaml(tmp_path / "water.yaml", config))]) == 0
    assert "MBAR: 2 windows" in capsys.readouterr().out
    windows = load_windows(tmp_path / "run")
    assert [w.cv.shape for w in windows] == [(20, 1), (20, 1)]
    assert abs(windows[0].cv.mean() - 0.96) < abs(windows[0].cv.mean() - 1.0)  # the spring holds the O-H bond


def test_mbar_profile_of_a_periodic_cv_across_pi():
    """Windows round a dihedral-like CV, samples drawn exactly from each biased distribution."""
    rng = np.random.default_rng(1)
    phi = np.linspace(-np.pi, np.pi, 20001)
    f = KT * (1.5 * np.cos(phi) + 0.5 * np.cos(2 * phi))  # exact F(φ)
    k, windows = 0.5, []  # eV/rad²
    for i, centre in enumerate(np.linspace(-np.pi, np.pi, 12, endpoint=False)):
        p = np.exp(-(f + 0.5 * k * wrap(phi - centre) ** 2) / KT)
        cdf = np.cumsum(p) / p.sum()
        windows.append(UmbrellaWindow(i, centre, k, np.interp(rng.random(8000), cdf, phi), period=2 * np.pi))
    profile = mbar_profile(windows, T, 24)
    assert profile.bin_edges[0] == pytest.approx(-np.pi) and len(profile.diagnostics["window_centres"]) == 12
    centres = profile.bin_centres
    edges = profile.bin_edges
    exact = -np.log([np.exp(-f[(phi >= a) & (phi < b)] / KT).mean() for a, b in zip(edges[:-1], edges[1:])])
    err = profile.free_energy / KT - (
        exact - exact[np.argmin(profile.free_energy)]
    )  # both 0 at MBAR's reference
    assert np.abs(err).max() < 0.2, err  # 8000 independent samples per window: MBAR's 1σ ≤ 0.05 k_BT
    assert profile.uncertainty.max() / KT < 0.06
    assert np.all(np.abs(err) <= 4 * profile.uncertainty / KT + 1e-3)  # and the error bars are honest
    assert centres[np.argmax(profile.free_energy)] == pytest.approx(0.0, abs=0.3)  # F is highest at φ = 0


def wrap(x: np.ndarray) -> np.ndarray:
    return (x + np.pi) % (2 * np.pi) - np.pi


def test_example_configs_are_valid():
    from nearsight.cli.sampling import load_sampling_config

    examples = Path(__file__).resolve().parents[1] / "examples" / "sampling"
    assert load_sampling_config(examples / "umbrella_double_well.yaml", "umbrella")["umbrella"]["k"] == 0.31
    assert load_sampling_config(examples / "metad_double_well.yaml", "metad")["metad"]["grid"] == [
        (-3.5, 3.5, 350.0)
    ]
    with pytest.raises(
        ValueError, match="model = .*best_model.pt'?: no such file"
    ):  # needs `nearsight train` first
        load_sampling_config(examples / "umbrella_ethanol_torsion.yaml", "umbrella")


def test_metadynamics_hills_save_and_load_atomically(tmp_path):
    cvs = [Position(0, "x"), Position(0, "y")]
    bias = WellTemperedMetadynamics(cvs, 0.01, [0.1, 0.2], 6.0, T, 10, grid=[(-2, 2, 80), (-2, 2, 40)])
    bias.deposit(np.array([[0.0, 0.1], [0.3, -0.2]]))  # two walkers at once: both get the full height
    bias.deposit(np.array([0.1, 0.0]))  # on the first hill's flank: lower (well-tempered)
    path = bias.save(tmp_path / "hills.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["hills.npz"]  # no temporary file left behind
    again = WellTemperedMetadynamics(cvs, 0.01, [0.1, 0.2], 6.0, T, 10, grid=[(-2, 2, 80), (-2, 2, 40)])
    again.load(path)
    points = np.random.default_rng(0).uniform(-1, 1, size=(50, 2))
    np.testing.assert_array_equal(again.potential(points), bias.potential(points))
    assert bias.heights[0] == bias.heights[1] == 0.01 and bias.heights[2] < 0.01
    other = WellTemperedMetadynamics(cvs, 0.01, [0.1, 0.3], 6.0, T, 10, grid=[(-2, 2, 80), (-2, 2, 40)])
    with pytest.raises(
        ValueError, match=r"hills.npz: hills saved with sigma = \[0.1, 0.2\], this bias has \[0.1, 0.3\]"
    ):
        other.load(path)
