"""NPT molecular dynamics (MTK barostat, nearsight.simulate.npt through run_md) and the nudged elastic
band (nearsight.simulate.neb), with EMT so that the answers are known independently:

- NPT of fcc Cu at 50 K reproduces the volume of EMT's static equation of state (ase.eos) at 0 and at
  5 GPa within 1 %. At 50 K the classical thermal expansion of EMT Cu is about +0.3 % in volume (about
  +0.05 % at 10 K: roughly linear in T), so 1 % holds with room to spare while the start cell
  (a = 3.61 Å, +1.7 % in volume) and the 3.6 % compression at 5 GPa are outside it: a barostat that
  does not act, or a pressure in the wrong unit, fails.
- An Au adatom hopping between hollow sites of Al(100) (ASE's NEB tutorial system) has its saddle at
  the bridge site by symmetry; the climbing-image energy must equal a minimisation with the adatom held
  at the bridge in x and y (an independent calculation) within 1 meV.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import add_adsorbate, bulk, fcc100
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms, FixCartesian
from ase.eos import EquationOfState
from ase.io import read, write
from ase.optimize import BFGS
from scipy.optimize import brentq

from crystal_helpers import copper_model
from nearsight.simulate.md import run_md
from nearsight.simulate.neb import run_neb

pytestmark = pytest.mark.usefixtures("one_thread")

T_K = 50.0
NPT = dict(timestep_fs=5.0, temperature_K=T_K, barostat_time_fs=500.0, thermostat_time_fs=100.0, seed=1)


def cu_cell(a: float = 3.61) -> Atoms:
    """32 atoms of fcc Cu, 2 × 2 × 2 conventional cells (ASE's a = 3.61 Å; EMT's minimum is 3.59 Å)."""
    return bulk("Cu", "fcc", a=a, cubic=True).repeat(2)


@pytest.fixture(scope="module")
def eos() -> EquationOfState:
    """EMT's static E(V) per atom of fcc Cu (Birch-Murnaghan), volumes from −8.7 % to +6.1 %."""
    base = bulk("Cu", "fcc", a=3.59, cubic=True)
    volumes, energies = [], []
    for s in np.linspace(0.97, 1.02, 11):
        atoms = base.copy()
        atoms.set_cell(base.cell * s, scale_atoms=True)
        atoms.calc = EMT()
        volumes.append(atoms.get_volume() / len(atoms))
        energies.append(atoms.get_potential_energy() / len(atoms))
    fit = EquationOfState(volumes, energies, eos="birchmurnaghan")
    fit.fit()
    return fit


def eos_volume(fit: EquationOfState, pressure_GPa: float) -> float:
    """The volume per atom (Å³) where −dE/dV of the EOS equals ``pressure_GPa``."""

    def excess(v: float, h: float = 1e-4) -> float:
        dedv = (fit.func(v + h, *fit.eos_parameters) - fit.func(v - h, *fit.eos_parameters)) / (2 * h)
        return -dedv - pressure_GPa * units.GPa

    return brentq(excess, 0.85 * fit.v0, 1.05 * fit.v0)


@pytest.fixture(scope="module")
def npt_runs(tmp_path_factory):
    """2 ps of isotropic NPT at 0 and at 5 GPa (5·10⁴ bar) from the same start; the zero-pressure run
    writes a trajectory and a log."""
    out = tmp_path_factory.mktemp("npt")
    runs = {}
    for p_GPa in (0.0, 5.0):
        files = dict(trajectory=out / "npt.traj", logfile=out / "npt.log", interval=100) if p_GPa == 0 else {}
        runs[p_GPa] = run_md(
            cu_cell(), EMT(), steps=400, ensemble="npt", pressure_bar=p_GPa * 1e4, **NPT, **files
        )
    return runs, out


@pytest.mark.parametrize("p_GPa", [0.0, 5.0])
def test_npt_volume_matches_the_equation_of_state(npt_runs, eos, p_GPa):
    result = npt_runs[0][p_GPa]
    settled = slice(len(result.volume) // 3, None)  # after 0.67 ps
    v_md = result.volume[settled].mean() / result.n_atoms
    v_eos = eos_volume(eos, p_GPa)
    print(f"p = {p_GPa} GPa: NPT {v_md:.4f} Å³/atom, EOS {v_eos:.4f} Å³/atom ({v_md / v_eos - 1:+.3%})")
    assert abs(v_md / v_eos - 1) < 0.01
    assert v_md > v_eos  # thermal expansion: the static EOS is the T → 0 limit
    assert result.pressure_bar[settled].mean() / 1e4 == pytest.approx(p_GPa, abs=0.1)  # ⟨P_int⟩ = P_ext
    assert result.temperature[settled].mean() == pytest.approx(T_K, rel=0.1)
    assert abs(result.drift_ev_per_atom_ps) < 1e-3  # the MTK invariant is conserved
    if p_GPa == 0:
        assert abs(result.volume[0] / result.n_atoms / v_eos - 1) > 0.015  # the barostat had to act


def test_npt_compression_follows_the_pressure(npt_runs, eos):
    """V(5 GPa)/V(0) of NPT against the EOS: a pressure unit off by any factor of 10 fails."""
    runs = npt_runs[0]
    ratio_md = runs[5.0].volume[150:].mean() / runs[0.0].volume[150:].mean()
    ratio_eos = eos_volume(eos, 5.0) / eos_volume(eos, 0.0)
    print(f"V(5 GPa)/V(0): NPT {ratio_md:.5f}, EOS {ratio_eos:.5f}")
    assert ratio_eos < 0.97
    assert ratio_md == pytest.approx(ratio_eos, abs=0.003)


def test_npt_trajectory_and_log_record_time_and_cell(npt_runs):
    result, out = npt_runs[0][0.0], npt_runs[1]
    frames = read(out / "npt.traj", index=":")
    assert [f.info["time_fs"] for f in frames] == pytest.approx([0, 500, 1000, 1500, 2000])
    volumes = np.array([f.get_volume() for f in frames])
    np.testing.assert_allclose(volumes, result.volume[::100], rtol=1e-12)
    assert np.ptp(volumes) / volumes.mean() > 0.01  # the cell changed
    # isotropic: every cell is the first one scaled
    scale = np.cbrt(result.volume / result.volume[0])[:, None, None]
    np.testing.assert_allclose(result.cell, scale * result.cell[0], atol=1e-9)
    lines = (out / "npt.log").read_text().splitlines()
    assert "Volume[Å³]" in lines[0] and "P[GPa]" in lines[0] and len(lines) == 6
    assert float(lines[-1].split()[-2]) == pytest.approx(result.volume[-1], abs=1e-4)


def test_npt_anisotropic_restores_a_cubic_cell():
    """A Cu cell stretched 4 % along c relaxes to c/a = 1 with the whole cell free, keeps its shape
    with the isotropic barostat."""
    start = cu_cell(3.59)
    start.set_cell(start.cell.array @ np.diag([1.0, 1.0, 1.04]), scale_atoms=True)
    aniso = run_md(start, EMT(), steps=300, ensemble="npt-aniso", pressure_bar=0.0, **NPT)
    lengths = np.linalg.norm(aniso.cell[150:], axis=2).mean(0)
    print(f"npt-aniso: mean cell lengths {lengths} Å (start 7.18 7.18 7.467)")
    assert lengths[2] / lengths[:2].mean() == pytest.approx(1.0, abs=0.005)
    iso = run_md(start, EMT(), steps=50, ensemble="npt", pressure_bar=0.0, **NPT)
    c_over_a = np.linalg.norm(iso.cell[:, 2], axis=1) / np.linalg.norm(iso.cell[:, 0], axis=1)
    np.testing.assert_allclose(c_over_a, 1.04, rtol=1e-10)
    assert np.ptp(iso.volume) > 0


def test_npt_refuses_what_it_cannot_run():
    water = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    with pytest.raises(ValueError, match=r"periodic in all three directions.*pbc = \[False, False, False\]"):
        run_md(water, EMT(), steps=1, ensemble="npt")
    slab = fcc100("Cu", size=(2, 2, 3), vacuum=5.0)
    with pytest.raises(ValueError, match=r"pbc = \[True, True, False\]"):
        run_md(slab, EMT(), steps=1, ensemble="npt-aniso")
    crystal = cu_cell()
    crystal.set_constraint(FixAtoms(indices=[0]))
    with pytest.raises(ValueError, match="does not support constraints.*FixAtoms"):
        run_md(crystal, EMT(), steps=1, ensemble="npt")
    with pytest.raises(ValueError, match="pressure_bar, barostat_time_fs act on NPT only"):
        run_md(cu_cell(), EMT(), steps=1, ensemble="nve", pressure_bar=1.0, barostat_time_fs=100.0)
    with pytest.raises(ValueError, match="ensemble must be"):
        run_md(cu_cell(), EMT(), steps=1, ensemble="npt-berendsen")


# ---------------------------------------------------------------------------------------------- NEB
def adatom_on_al100() -> tuple[Atoms, Atoms]:
    """ASE's NEB tutorial: Au in a hollow site of a 2 × 2 Al(100) slab (3 layers, the two lower fixed),
    and the same hopped to the next hollow site (half the cell along x); neither is relaxed."""
    slab = fcc100("Al", size=(2, 2, 3))
    add_adsorbate(slab, "Au", 1.7, "hollow")
    slab.center(axis=2, vacuum=4.0)
    slab.set_constraint(FixAtoms(mask=slab.get_tags() > 1))
    final = slab.copy()
    final.positions[-1, 0] += slab.cell[0, 0] / 2
    return slab, final


@pytest.fixture(scope="module")
def hop(tmp_path_factory):
    initial, final = adatom_on_al100()
    history = tmp_path_factory.mktemp("neb") / "history.traj"
    return run_neb(initial, final, EMT, n_images=3, fmax=0.01, trajectory=history), initial, history


def test_neb_climbing_image_is_the_bridge_saddle(hop):
    from ase.mep import NEBTools

    result, initial, history = hop
    assert result.converged and result.endpoints_relaxed
    print(f"Au/Al(100) hop: barrier {result.barrier_forward:.5f} eV, {result.n_steps} steps")
    assert result.barrier_forward > 0.1
    assert result.saddle_index == 2 and result.saddle_max_force < result.fmax
    band = read(history, index=":")  # the band at every step: ASE's tools read the last one
    assert len(band) == 5 * (result.n_steps + 1)
    assert NEBTools(band[-5:]).get_barrier(fit=False)[0] == pytest.approx(result.barrier_forward, abs=1e-9)
    assert (
        max(
            np.linalg.norm(image.get_forces(), axis=1).max()
            for image in (result.images[0], result.images[-1])
        )
        < 0.01
    )
    # a symmetric hop: forward = backward, and the profile is its own mirror image
    assert result.barrier_forward == pytest.approx(result.barrier_backward, abs=1e-3)
    np.testing.assert_allclose(result.energies, result.energies[::-1], atol=1e-3)
    np.testing.assert_allclose(result.fit_energies, result.fit_energies[::-1], atol=1e-3)  # tangents too
    # independent: minimise with the adatom held at the bridge site in x and y, everything else free
    bridge = result.images[0].copy()
    bridge.positions[-1, 0] += initial.cell[0, 0] / 4
    bridge.set_constraint(
        [FixAtoms(mask=bridge.get_tags() > 1), FixCartesian(len(bridge) - 1, mask=(True, True, False))]
    )
    bridge.calc = EMT()
    assert BFGS(bridge, logfile=None).run(fmax=1e-4, steps=200)
    saddle = result.energies[result.saddle_index]
    print(f"saddle {saddle:.6f} eV, bridge minimum {bridge.get_potential_energy():.6f} eV")
    assert saddle == pytest.approx(bridge.get_potential_energy(), abs=1e-3)
    # the saddle's adatom sits on a bridge, a quarter cell from the start (either way: a hop of half
    # the cell is the same through either neighbouring bridge, and the minimum image picks one)
    shift = result.saddle.positions[-1] - result.images[0].positions[-1]
    assert abs(shift[0]) == pytest.approx(initial.cell[0, 0] / 4, abs=0.02) and abs(shift[1]) < 0.02


def test_neb_refuses_mismatched_end_points():
    initial, final = adatom_on_al100()
    reordered = final[[len(final) - 1, *range(len(final) - 1)]]
    with pytest.raises(ValueError, match=r"differ at atom 0: Al in the initial state, Au in the final state"):
        run_neb(initial, reordered, EMT, n_images=1)
    with pytest.raises(
        ValueError, match="differ in size: the initial state has 13 atoms, the final state 12"
    ):
        run_neb(initial, final[:-1], EMT, n_images=1)
    stretched = final.copy()
    stretched.set_cell(final.cell.array * [1.01, 1, 1])
    with pytest.raises(ValueError, match="different cells"):
        run_neb(initial, stretched, EMT, n_images=1)
    with pytest.raises(ValueError, match="same positions"):
        run_neb(initial, initial.copy(), EMT, n_images=1)
    with pytest.raises(ValueError, match="method 'string'"):
        run_neb(initial, final, EMT, method="string")


# ---------------------------------------------------------------------------------------------- CLI
def cli(argv: list[str]) -> int:
    from nearsight.cli.md import add_md_parser
    from nearsight.cli.neb import add_neb_parser

    parser = argparse.ArgumentParser(prog="nearsight")
    sub = parser.add_subparsers(dest="command", required=True)
    add_md_parser(sub)
    add_neb_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def cu_model(tmp_path_factory) -> str:
    """A float64 Δ-model of Cu on EMT (the baseline recorded in the file)."""
    from nearsight.models.io import save_model

    model = copper_model(0)
    return str(save_model(model, tmp_path_factory.mktemp("model") / "cu.pt", metadata=model.metadata))


def test_md_command_npt(tmp_path, capsys, cu_model):
    structure = tmp_path / "cu.extxyz"
    bulk("Cu", "fcc", a=3.61).repeat(2).write(structure)
    traj, log = tmp_path / "npt.traj", tmp_path / "npt.log"
    argv = ["md", str(structure), cu_model, "--ensemble", "npt", "--pressure-bar", "1e4", "--steps", "20"]
    argv += ["--timestep-fs", "2", "--temperature-K", "100", "--trajectory", str(traj), "--log", str(log)]
    assert cli([*argv, "--interval", "5", "--anisotropic", "--progress-every", "10"]) == 0
    out = capsys.readouterr().out
    assert "npt-aniso at 10000 bar (1 GPa) and 100 K" in out and "Å³/atom" in out and " V " in out
    frames = read(traj, index=":")
    assert [f.info["time_fs"] for f in frames] == pytest.approx([0, 10, 20, 30, 40])
    assert np.abs(frames[-1].cell.array - frames[0].cell.array).max() > 1e-4
    assert "Volume[Å³]" in log.read_text().splitlines()[0]

    cluster = tmp_path / "cu3.xyz"
    write(cluster, Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [1.25, 2.1, 0]]))
    with pytest.raises(ValueError, match=r"cu3.xyz \(frame 0\): NPT .* needs a structure periodic"):
        cli(["md", str(cluster), cu_model, "--ensemble", "npt", "--steps", "2"])
    with pytest.raises(ValueError, match="--pressure-bar, --anisotropic: only with --ensemble npt"):
        cli(["md", str(structure), cu_model, "--pressure-bar", "1", "--anisotropic", "--steps", "2"])


def test_neb_command(tmp_path, capsys, cu_model):
    """A Cu adatom hopping on Cu(100) with the Δ-model: files written, a symmetric positive barrier."""
    from ase.mep import NEBTools

    slab = fcc100("Cu", size=(2, 2, 2))
    add_adsorbate(slab, "Cu", 1.6, "hollow")
    slab.center(axis=2, vacuum=4.0)
    slab.set_constraint(FixAtoms(mask=slab.get_tags() > 1))
    final = slab.copy()
    final.positions[-1, 0] += slab.cell[0, 0] / 2
    write(tmp_path / "a.traj", slab)
    write(tmp_path / "b.traj", final)
    out = tmp_path / "neb"
    argv = ["neb", str(tmp_path / "a.traj"), str(tmp_path / "b.traj"), cu_model, "--images", "3"]
    assert cli([*argv, "--output-dir", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "neb.json").read_text())
    print(printed, {k: report[k] for k in ("barrier_forward", "barrier_backward", "n_steps")})
    assert report["converged"] and report["barrier_forward"] > 0.05 and report["saddle_index"] == 2
    assert report["barrier_forward"] == pytest.approx(report["barrier_backward"], abs=1e-3)
    assert f"barrier forward {report['barrier_forward']:.4f} eV" in printed
    assert (out / "neb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    band = read(out / "neb.traj", index=":")
    assert len(band) == 5
    assert NEBTools(band).get_barrier(fit=False)[0] == pytest.approx(report["barrier_forward"], abs=1e-9)

    moved = final.copy()
    moved.set_cell(final.cell.array * [1.02, 1, 1])
    write(tmp_path / "c.traj", moved)
    with pytest.raises(ValueError, match=r"different cells.*c.traj \(frame 0\)"):
        cli(["neb", str(tmp_path / "a.traj"), str(tmp_path / "c.traj"), cu_model, "--output-dir", str(out)])
