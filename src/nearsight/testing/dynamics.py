"""Energy conservation in NVE molecular dynamics (ASE velocity Verlet)."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from ..simulate.md import run_md
from ._common import CheckResult, Evaluator, as_rng, make_result


def nve_energies(
    model,
    atoms: Atoms,
    *,
    temperature_K: float = 300.0,
    timestep_fs: float = 0.5,
    n_steps: int = 200,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run velocity Verlet from Maxwell-Boltzmann velocities; return times (ps) and total energies (eV).

    Centre-of-mass momentum is removed, and for non-periodic structures the
    angular momentum as well (see :func:`nearsight.simulate.md.run_md`).
    """
    seed = int(as_rng(rng).integers(2**31))
    calc = Evaluator.wrap(model).ase_calculator()
    result = run_md(
        atoms,
        calc,
        steps=n_steps,
        timestep_fs=timestep_fs,
        temperature_K=temperature_K,
        seed=seed,
        init_velocities=True,
    )
    return result.time_ps, result.total_energy


def check_nve(
    model,
    atoms: Atoms,
    *,
    tol: float = 1e-3,
    rng: np.random.Generator | None = None,
    temperature_K: float = 300.0,
    timestep_fs: float = 0.5,
    n_steps: int = 200,
    fluctuation_tol: float | None = None,
) -> CheckResult:
    """Drift of the total energy in NVE dynamics, eV/atom/ps (absolute value).

    The drift is the slope of a least-squares line through E_tot(t), divided by
    the number of atoms; the fluctuation (standard deviation of E_tot about
    that line, eV/atom) is reported and, if ``fluctuation_tol`` is given, must
    stay below it as well.
    """
    times, energies = nve_energies(
        model, atoms, temperature_K=temperature_K, timestep_fs=timestep_fs, n_steps=n_steps, rng=rng
    )
    n = max(len(atoms), 1)
    if not np.all(np.isfinite(energies)):
        bad = int(np.argmin(np.isfinite(energies)))
        return make_result("nve_drift", float("inf"), tol, f"non-finite total energy at step {bad}")
    slope, intercept = np.polyfit(times, energies, 1)
    residual = energies - (slope * times + intercept)
    drift = abs(float(slope)) / n
    fluct = float(residual.std()) / n
    detail = (
        f"{n_steps} steps of {timestep_fs:g} fs from {temperature_K:g} K, {n} atoms: "
        f"drift {slope / n:+.3e} eV/atom/ps, fluctuation {fluct:.3e} eV/atom, "
        f"max-min {(energies.max() - energies.min()) / n:.3e} eV/atom"
    )
    result = make_result("nve_drift", drift, tol, detail)
    if fluctuation_tol is not None and not fluct <= fluctuation_tol:
        result.passed = False
        result.detail += f"; fluctuation above {fluctuation_tol:.3e} eV/atom"
    return result
