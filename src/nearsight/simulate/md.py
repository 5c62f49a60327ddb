"""Molecular dynamics through ASE's integrators.

NVE with velocity Verlet, NVT with Langevin (``fixcm=False``: the thermostat samples the
canonical distribution, as ASE >= 3.28 recommends), NPT with the Martyna-Tobias-Klein barostat
and Nosé-Hoover chains (``"npt"``: isotropic, the volume fluctuates; ``"npt-aniso"``: the whole
cell; see :mod:`nearsight.simulate.npt` for the equations and why MTK); a trajectory (ASE
``.traj``) and a text log are written as the run goes.  The drift, the slope of a least-squares
line through the conserved energy in eV/atom/ps, is measured for NVE (E_tot) and NPT (the MTK
invariant H' = E_tot + P_ext V + barostat and chain energies); Langevin exchanges energy with a
bath and has no conserved quantity, so ``MDResult.drift_ev_per_atom_ps`` is NaN there.  NPT runs
also record the volume, cell and instantaneous pressure at every step.

Velocities: a start structure that carries momenta (a frame of an MD trajectory) keeps them;
one without draws Maxwell-Boltzmann velocities at ``temperature_K`` (``init_velocities=True``
draws them in any case, ``False`` never).  Errors of the calculator (:mod:`nearsight.guards`:
atoms too close, non-finite output, extrapolation with ``on_extrapolation="raise"``) stop the
run and are raised again with the MD step and time prefixed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import Trajectory
from ase.md import MDLogger
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

from ..guards import CloseAtomsError, ExtrapolationError, NonFiniteOutputError
from ..progress import progress_bar
from .npt import (
    NPT_ENSEMBLES,
    NPTLogger,
    instantaneous_pressure_bar,
    make_npt_dynamics,
    require_npt_structure,
)

try:
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # ASE < 3.29
    thermalize_momenta = None


@dataclass
class MDResult:
    """What :func:`run_md` measured; samples are taken at every step, from step 0 on."""

    steps: int  # steps run (fewer than asked when stopped on extrapolation)
    time_ps: np.ndarray  # [n_samples]
    total_energy: np.ndarray  # [n_samples] eV
    temperature: np.ndarray  # [n_samples] K
    n_atoms: int
    wall_time_s: float
    ensemble: str = "nve"
    potential_energy: np.ndarray | None = None  # [n_samples] eV
    # [n_samples] int, atoms with an extrapolation count > 0; None if the calculator reports none
    extrapolating_atoms: np.ndarray | None = None
    stopped: str | None = None  # why the run stopped before ``steps`` (None: it ran them all)
    velocities_initialised: bool = True  # False: the start structure's own velocities were used
    # NPT only (None otherwise), every step:
    volume: np.ndarray | None = None  # [n_samples] Å³
    cell: np.ndarray | None = None  # [n_samples, 3, 3] Å, rows a, b, c
    pressure_bar: np.ndarray | None = None  # [n_samples] bar, instantaneous (virial + kinetic)
    conserved_energy: np.ndarray | None = None  # [n_samples] eV, the MTK invariant H'

    @property
    def drift_ev_per_atom_ps(self) -> float:
        """Slope of a linear fit of the conserved energy (E_tot in NVE, H' in NPT), eV/atom/ps;
        NaN for Langevin."""
        conserved = self.total_energy if self.ensemble == "nve" else self.conserved_energy
        if conserved is None or len(self.time_ps) < 2:
            return float("nan")
        slope = np.polyfit(self.time_ps, conserved, 1)[0]
        return float(slope / self.n_atoms)

    @property
    def fluctuation_ev_per_atom(self) -> float:
        return float(np.std(self.total_energy) / self.n_atoms)

    @property
    def extrapolating_steps(self) -> int | None:
        """Number of sampled steps with at least one extrapolating atom (None: not reported)."""
        if self.extrapolating_atoms is None:
            return None
        return int(np.count_nonzero(self.extrapolating_atoms > 0))


def has_velocities(atoms: Atoms) -> bool:
    """Whether ``atoms`` carries momenta that are not all zero."""
    return bool(atoms.has("momenta") and np.any(atoms.get_momenta() != 0))


def progress_line(
    step: int,
    time_ps: float,
    temperature: float,
    epot: float,
    etot: float,
    extrapolating: int | None,
    volume: float | None = None,
) -> str:
    """One line of MD progress: step, time (ps), T (K), E_pot and E_tot (eV), then V (Å³) and
    the number of extrapolating atoms where given."""
    line = (
        f"step {step:>9d}  t {time_ps:10.4f} ps  T {temperature:9.1f} K  "
        f"Epot {epot:14.6f} eV  Etot {etot:14.6f} eV"
    )
    if volume is not None:
        line += f"  V {volume:12.4f} Å³"
    return line if extrapolating is None else f"{line}  extrapolating atoms {extrapolating}"


def _at_step(exc: Exception, step: int, timestep_fs: float) -> Exception:
    """The same exception with the MD step and time in front of its message."""
    new = copy.copy(exc)
    new.args = (f"MD step {step} (t = {step * timestep_fs:g} fs): {exc}",)
    return new


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
    init_velocities: bool | None = None,
    progress: Callable[[str], None] | None = None,
    progress_interval: int = 100,
    stop_on_extrapolation: bool = False,
    pressure_bar: float | None = None,
    barostat_time_fs: float | None = None,
    thermostat_time_fs: float | None = None,
    show_bar: bool | None = None,
) -> MDResult:
    """Run ``steps`` MD steps on a copy of ``atoms`` and record the energies at every step.

    ``ensemble``: "nve", "langevin" (``friction_per_fs``), "npt" or "npt-aniso" (MTK barostat at
    ``pressure_bar``, default 1 bar, with time constants ``barostat_time_fs`` (default 1000
    timesteps) and ``thermostat_time_fs`` (default 100 timesteps), see :mod:`nearsight.simulate.npt`;
    the structure must be periodic in three directions; these three arguments are refused for the
    other ensembles).

    ``init_velocities``: None (default) draws Maxwell-Boltzmann velocities at ``temperature_K``
    only if ``atoms`` has no (non-zero) momenta, True always, False never.  ``progress`` is
    called with :func:`progress_line` every ``progress_interval`` steps (and at step 0).
    ``stop_on_extrapolation`` ends the run after the first step at which the calculator reports
    extrapolating atoms (``results["extrapolating_atoms"] > 0``); ``MDResult.stopped`` says so.
    ``show_bar``: a progress bar on standard error (None: by :func:`nearsight.progress.progress_enabled`).
    """
    import time

    npt = ensemble in NPT_ENSEMBLES
    if ensemble not in ("nve", "langevin", *NPT_ENSEMBLES):
        raise ValueError(f"ensemble must be 'nve', 'langevin', 'npt' or 'npt-aniso', got {ensemble!r}")
    if npt:
        require_npt_structure(atoms, calculator)
    else:
        given = [
            name
            for name, value in (
                ("pressure_bar", pressure_bar),
                ("barostat_time_fs", barostat_time_fs),
                ("thermostat_time_fs", thermostat_time_fs),
            )
            if value is not None
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)} act on NPT only (ensemble 'npt' or 'npt-aniso'), not {ensemble!r}"
            )
    if steps < 0 or timestep_fs <= 0 or interval < 1 or progress_interval < 1:
        raise ValueError(
            "need steps >= 0, timestep_fs > 0, interval >= 1, progress_interval >= 1; got "
            f"{steps}, {timestep_fs}, {interval}, {progress_interval}"
        )
    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    if init_velocities is None:
        init_velocities = not has_velocities(atoms)
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
    elif npt:
        dyn = make_npt_dynamics(
            atoms,
            timestep_fs=timestep_fs,
            temperature_K=temperature_K,
            pressure_bar=1.0 if pressure_bar is None else pressure_bar,
            barostat_time_fs=barostat_time_fs,
            thermostat_time_fs=thermostat_time_fs,
            anisotropic=ensemble == "npt-aniso",
        )
    else:
        dyn = Langevin(
            atoms,
            timestep=dt,
            temperature_K=temperature_K,
            friction=friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
        )
    times, epots, energies, temps, extrapolating = [], [], [], [], []
    volumes, cells, pressures, conserved = [], [], [], []

    def record() -> None:
        epot = atoms.get_potential_energy()
        times.append(dyn.get_time() / (1000 * units.fs))
        epots.append(epot)
        energies.append(epot + atoms.get_kinetic_energy())
        temps.append(atoms.get_temperature())
        n = atoms.calc.results.get("extrapolating_atoms")
        extrapolating.append(None if n is None else int(n))
        if npt:
            volumes.append(atoms.get_volume())
            cells.append(atoms.cell.array.copy())
            pressures.append(instantaneous_pressure_bar(atoms))
            conserved.append(dyn.get_conserved_energy())
        step = len(times) - 1
        if step:
            bar.set_postfix(T=f"{temps[-1]:.1f} K", E=f"{energies[-1]:.6g} eV", refresh=False)
            bar.update()
        if progress is not None and step % progress_interval == 0:
            volume = volumes[-1] if npt else None
            progress(progress_line(step, times[-1], temps[-1], epot, energies[-1], extrapolating[-1], volume))

    dyn.attach(record, interval=1)
    handles = []
    if trajectory is not None:
        Path(trajectory).parent.mkdir(parents=True, exist_ok=True)
        traj = Trajectory(str(trajectory), "w", atoms)

        def write_frame() -> None:  # each frame's time, so spectra need no --timestep-fs
            atoms.info["time_fs"] = dyn.get_time() / units.fs
            traj.write()

        dyn.attach(write_frame, interval=interval)
        handles.append(traj)
    if logfile is not None:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        if npt:
            logger = NPTLogger(dyn, atoms, str(logfile), mode="w")
        else:
            logger = MDLogger(dyn, atoms, str(logfile), header=True, stress=False, peratom=True, mode="w")
        dyn.attach(logger, interval=interval)
        handles.append(logger)
    stopped = None
    bar = progress_bar(total=steps, desc=f"MD {ensemble}", unit="step", enabled=show_bar)
    if progress is not None:
        progress = bar.wrap(progress)  # the lines print above the bar
    start = time.perf_counter()
    try:
        for _ in dyn.irun(steps):
            if stop_on_extrapolation and (extrapolating[-1] or 0) > 0:
                stopped = (
                    f"stopped at step {len(times) - 1} (t = {times[-1]:.4f} ps): "
                    f"{extrapolating[-1]} extrapolating atom(s)"
                )
                break
    except (CloseAtomsError, NonFiniteOutputError, ExtrapolationError) as exc:
        raise _at_step(exc, len(times), timestep_fs) from exc
    finally:
        bar.close()
        for h in handles:
            h.close()
    reported = [n for n in extrapolating if n is not None]
    return MDResult(
        steps=max(len(times) - 1, 0),
        time_ps=np.asarray(times),
        total_energy=np.asarray(energies),
        temperature=np.asarray(temps),
        n_atoms=len(atoms),
        wall_time_s=time.perf_counter() - start,
        ensemble=ensemble,
        potential_energy=np.asarray(epots),
        extrapolating_atoms=np.asarray(reported, dtype=np.int64) if len(reported) == len(times) else None,
        stopped=stopped,
        velocities_initialised=bool(init_velocities),
        volume=np.asarray(volumes) if npt else None,
        cell=np.asarray(cells).reshape(-1, 3, 3) if npt else None,
        pressure_bar=np.asarray(pressures) if npt else None,
        conserved_energy=np.asarray(conserved) if npt else None,
    )
