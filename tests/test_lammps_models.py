"""Real nearsight models in LAMMPS (``pair_style nearsight``): every model type equals the ASE
calculator on a triclinic water box; the two-layer equivariant model gives the one-process result
on 2 and 4 MPI ranks (and not with a ghost shell one cutoff thick); NVE conserves energy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

import lammps_helpers as lh
from aoti_models import KINDS
from nearsight.calculator import NearsightCalculator
from structures import water_box
from test_aoti import triclinic_water

pytestmark = [
    pytest.mark.skipif(lh.lammps_missing() is not None, reason=str(lh.lammps_missing())),
    pytest.mark.filterwarnings("ignore:the model extrapolates"),
]

NKTV2P = 1.6021765e6  # LAMMPS metal units: bar per eV/Å³
TYPES = {8: 1, 1: 2}  # LAMMPS types: O, H

RUN0 = """
units metal
atom_style atomic
boundary {boundary}
{processors}
read_data water.data
mass 1 15.999
mass 2 1.008
plugin load {plugin}
pair_style nearsight {style}
pair_coeff * * {package} O H
neighbor 1.0 bin
compute pe all pe/atom
thermo_style custom step pe pxx pyy pzz pxy pxz pyz vol
dump d all custom 1 atoms.dump id fx fy fz c_pe
dump_modify d format float %24.17g sort id
run 0
print "RESULT $(pe:%.17g) $(pxx:%.17g) $(pyy:%.17g) $(pzz:%.17g) $(pxy:%.17g) $(pxz:%.17g) $(pyz:%.17g) $(vol:%.17g)"
{more}
"""

NVE_STEPS = """
undump d
velocity all create 300 4242 loop geom
timestep 0.0005
fix nve all nve
run 30
print "RESULT $(pe:%.17g)"
"""


def write_data(atoms: Atoms, path: Path) -> Path:
    """A LAMMPS data file of ``atoms`` (cell already lower triangular, LAMMPS's own frame)."""
    cell = np.asarray(atoms.cell)
    assert np.allclose(cell[np.triu_indices(3, 1)], 0.0)
    lines = [
        "water for the nearsight LAMMPS tests",
        "",
        f"{len(atoms)} atoms",
        "2 atom types",
        "",
        f"0 {cell[0, 0]:.15f} xlo xhi",
        f"0 {cell[1, 1]:.15f} ylo yhi",
        f"0 {cell[2, 2]:.15f} zlo zhi",
        f"{cell[1, 0]:.15f} {cell[2, 0]:.15f} {cell[2, 1]:.15f} xy xz yz",
        "",
        "Atoms # atomic",
        "",
    ]
    wrapped = atoms.get_positions(wrap=True)
    lines += [
        f"{k + 1} {TYPES[z]} {x:.15f} {y:.15f} {w:.15f}"
        for k, (z, (x, y, w)) in enumerate(zip(atoms.numbers, wrapped))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def plugin(tmp_path_factory) -> Path:
    from filelock import FileLock

    with FileLock(str(tmp_path_factory.getbasetemp().parent / "nearsight-plugin-build.lock")):
        build = lh.subprocess.run(["bash", str(lh.BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    assert build.returncode == 0, f"plugin build failed:\n{build.stdout}\n{build.stderr}"
    return lh.PLUGIN


def run_water(plugin, package, atoms, workdir: Path, nprocs=1, grid="", style="", more="", boundary="p p p"):
    workdir.mkdir(parents=True, exist_ok=True)
    write_data(atoms, workdir / "water.data")
    script = RUN0.format(
        boundary=boundary,
        processors=f"processors {grid}" if grid else "",
        plugin=plugin,
        style=style,
        package=package,
        more=more,
    )
    proc = lh.run_lammps(script, workdir, nprocs, timeout=300)
    rows = lh.results(proc)
    return rows, lh.read_dump(workdir / "atoms.dump"), proc


@pytest.mark.parametrize("style", ["", "chunk 7"])
@pytest.mark.parametrize("kind", KINDS)
def test_run0_equals_calculator(plugin, aoti_package, kind, style, tmp_path):
    """Also with ``chunk 7``: the owned atoms 7 at a time, each chunk on its receptive field."""
    model_path, package = aoti_package(kind)
    atoms = triclinic_water()
    (values,), dump, _ = run_water(plugin, package, atoms, tmp_path, style=style)
    ref = atoms.copy()
    ref.calc = NearsightCalculator(str(model_path))
    n = len(atoms)
    assert abs(values[0] - ref.get_potential_energy()) / n < 1e-10
    np.testing.assert_allclose(dump[:, 1:4], ref.get_forces(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dump[:, 4], ref.get_potential_energies(), rtol=0, atol=1e-10)
    xx, yy, zz, xy, xz, yz, volume = values[1:]
    virial = np.array([xx, yy, zz, yz, xz, xy]) * volume / NKTV2P  # Voigt order of ASE
    np.testing.assert_allclose(virial, -ref.get_stress() * ref.get_volume(), rtol=0, atol=1e-8)


@pytest.fixture(scope="module")
def mp_serial(plugin, aoti_package, tmp_path_factory):
    _, package = aoti_package("equivariant")
    atoms = water_box(3, seed=11)
    return atoms, run_water(plugin, package, atoms, tmp_path_factory.mktemp("serial"), more=NVE_STEPS)


@pytest.mark.parametrize(("nprocs", "grid"), [(2, "1 1 2"), (2, "2 1 1"), (4, "1 2 2")])
def test_equivariant_on_several_ranks_equals_one(plugin, aoti_package, mp_serial, tmp_path, nprocs, grid):
    _, package = aoti_package("equivariant")
    atoms, ((ref0, ref30), ref_dump, _) = mp_serial
    (start, end), dump, proc = run_water(plugin, package, atoms, tmp_path, nprocs, grid, more=NVE_STEPS)
    assert f"{nprocs} MPI tasks" in proc.stdout or f"{nprocs} procs" in proc.stdout
    assert abs(start[0] - ref0[0]) / len(atoms) < 1e-10
    np.testing.assert_allclose(dump[:, 1:], ref_dump[:, 1:], rtol=0, atol=1e-10)
    np.testing.assert_allclose(start[1:], ref0[1:], rtol=1e-12, atol=1e-8)
    assert abs(end[0] - ref30[0]) < 1e-8  # potential energy after 30 NVE steps


@pytest.mark.parametrize(("nprocs", "grid"), [(1, ""), (2, "1 1 2")])
def test_equivariant_in_chunks_equals_one_evaluation(plugin, aoti_package, mp_serial, tmp_path, nprocs, grid):
    """``pair_style nearsight chunk 16``: the 81 atoms 16 at a time (on one rank and on each of
    two), each chunk with its two-hop receptive field, give the one-evaluation energies, forces,
    virial and trajectory."""
    _, package = aoti_package("equivariant")
    atoms, ((ref0, ref30), ref_dump, _) = mp_serial
    (start, end), dump, _ = run_water(plugin, package, atoms, tmp_path, nprocs, grid, "chunk 16", NVE_STEPS)
    assert abs(start[0] - ref0[0]) / len(atoms) < 1e-10
    np.testing.assert_allclose(dump[:, 1:], ref_dump[:, 1:], rtol=0, atol=1e-10)
    np.testing.assert_allclose(start[1:], ref0[1:], rtol=1e-12, atol=1e-8)
    assert abs(end[0] - ref30[0]) < 1e-8


def test_one_ghost_layer_breaks_the_equivariant_model(plugin, aoti_package, mp_serial, tmp_path):
    """Negative control: with a ghost shell of one cutoff a 2-layer model misses its second hop."""
    _, package = aoti_package("equivariant")
    atoms, ((ref0, _), ref_dump, _) = mp_serial
    (start,), dump, proc = run_water(plugin, package, atoms, tmp_path, 2, "2 1 1", style="ghost_layers 1")
    assert "ghost_layers 1 is smaller" in proc.stdout
    assert np.abs(dump[:, 1:4] - ref_dump[:, 1:4]).max() > 1e-6


def test_nve_energy_drift(plugin, aoti_package, tmp_path):
    """10 ps of NVE at 0.5 fs in float64 (a 24-atom water cluster, shrink-wrapped box): the total
    energy drifts by less than 1e-5 eV/atom/ps."""
    _, package = aoti_package("acsf")
    atoms = water_box(2, seed=3)
    more = """
undump d
velocity all create 300 777 loop geom
timestep 0.0005
fix nve all nve
thermo_style custom step time pe ke etotal
thermo 200
run 20000
"""
    _, _, proc = run_water(plugin, package, atoms, tmp_path, more=more, boundary="s s s")
    rows = lh.thermo_rows(proc.stdout, "Step Time PotEng KinEng TotEng")
    time_ps, etot, ke = rows[:, 1], rows[:, 4], rows[:, 3]
    assert time_ps[-1] == pytest.approx(10.0)
    drift = np.polyfit(time_ps, etot, 1)[0] / len(atoms)  # eV/atom/ps
    print(f"NVE drift {drift:.2e} eV/atom/ps over {time_ps[-1]:.1f} ps")
    assert abs(drift) < 1e-5, drift
    assert ke.mean() > 0.3 * 1.5 * len(atoms) * 0.02585  # it moved (300 K starts at 1.5 N kT)


def test_nvt_water_example_runs(plugin, aoti_package, tmp_path):
    """examples/lammps/in.water_nvt, as the README runs it (a few steps, 2 ranks)."""
    from ase.io import write

    _, package = aoti_package("acsf")
    atoms = water_box(3, seed=2)
    write(tmp_path / "water.data", atoms, format="lammps-data", specorder=["O", "H"], masses=True)
    example = (lh.ROOT / "examples" / "lammps" / "in.water_nvt").read_text()
    variables = f"variable plugin index {plugin}\nvariable model index {package}\nvariable steps index 20\n"
    proc = lh.run_lammps(variables + example, tmp_path, nprocs=2, timeout=300)
    rows = lh.thermo_rows(proc.stdout, "Step Time Temp PotEng KinEng TotEng Press Density")
    assert rows[0, 0] == 0 and rows[-1, 0] == 20
    assert np.isfinite(rows).all() and 100 < rows[0, 2] < 500
    assert (tmp_path / "water_nvt.dump").exists()
