"""Molecular dynamics through ASE's integrators.

NVE with velocity Verlet, NVT with Langevin; a trajectory (ASE ``.traj``) and
a text log are written as the run goes.  The total-energy drift is measured as
the slope of a least-squares line through E_tot(t), in eV/atom/ps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import Trajectory
from ase.md import MDLogger
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

try:
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # ASE < 3.29
    thermalize_momenta = None


@dataclass
class MDResult:
    steps: int
    time_ps: np.ndarray  # [n_samples]
    total_energy: np.ndarray  # [n_samples] eV
    temperature: np.ndarray  # [n_samples] K
    n_atoms: int
    wall_time_s: float

    @property
    def drift_ev_per_atom_ps(self) -> float:
        """Slope of a linear fit of the total energy, eV/atom/ps."""
        if len(self.time_ps) < 2:
            return float("nan")
        slope = np.polyfit(self.time_ps, self.total_energy, 1)[0]
        return float(slope / self.n_atoms)

    @property
    def fluctuation_ev_per_atom(self) -> float:
        return float(np.std(self.total_energy) / self.n_atoms)


def run_md(
    atoms: Atoms,
    calculator,
    *,
    steps: int,
    timestep_fs: float = 0.5,
    temperature_K: float = 300.0,
    ensemble: str = "nve",
    friction_per_fs: float = 0.01,
    seed: int = 0,
    trajectory: str | Path | None = None,
    logfile: str | Path | None = None,
    interval: int = 10,
    init_velocities: bool = True,
) -> MDResult:
    """Run ``steps`` MD steps on a copy of ``atoms`` and record the total energy."""
    import time

    if ensemble not in ("nve", "langevin"):
        raise ValueError(f"ensemble must be 'nve' or 'langevin', got {ensemble!r}")
    if steps < 0 or timestep_fs <= 0 or interval < 1:
        raise ValueError(
            f"need steps >= 0, timestep_fs > 0, interval >= 1; got {steps}, {timestep_fs}, {interval}"
        )
    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    if init_velocities:
        if thermalize_momenta is not None:
            thermalize_momenta(atoms, temperature_K, rng=rng)
        else:  # ASE < 3.29
            MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        Stationary(atoms)
        if not atoms.pbc.any() and len(atoms) > 2:
            ZeroRotation(atoms)
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt)
    else:
        dyn = Langevin(
            atoms, timestep=dt, temperature_K=temperature_K, friction=friction_per_fs / units.fs, rng=rng
        )
    times, energies, temps = [], [], []

    def record() -> None:
        times.append(dyn.get_time() / (1000 * units.fs))
        energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        temps.append(atoms.get_temperature())

    dyn.attach(record, interval=1)
    handles = []
    if trajectory is not None:
        Path(trajectory).parent.mkdir(parents=True, exist_ok=True)
        traj = Trajectory(str(trajectory), "w", atoms)
        dyn.attach(traj.write, interval=interval)
        handles.append(traj)
    if logfile is not None:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        logger = MDLogger(dyn, atoms, str(logfile), header=True, stress=False, peratom=True, mode="w")
        dyn.attach(logger, interval=interval)
        handles.append(logger)
    start = time.perf_counter()
    try:
        dyn.run(steps)
    finally:
        for h in handles:
            h.close()
    return MDResult(
        steps=steps,
        time_ps=np.asarray(times),
        total_energy=np.asarray(energies),
        temperature=np.asarray(temps),
        n_atoms=len(atoms),
        wall_time_s=time.perf_counter() - start,
    )
