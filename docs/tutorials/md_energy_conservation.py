# %% [markdown]
# # MD and energy conservation
#
# In NVE molecular dynamics (constant number of atoms, volume and energy) the total energy
# E_tot = E_pot + E_kin of an exact trajectory is constant. Velocity Verlet, the integrator of
# `nearsight md` and `nearsight.simulate.run_md` (ASE's `VelocityVerlet`), does not follow the
# exact trajectory, but it is symplectic and time-reversible: E_tot fluctuates by an amount
# that grows as Δt² and does not drift, **provided the forces are the exact gradient of a smooth
# energy**. So the drift of E_tot is a test of the potential:
#
# * forces that are not −∇E (a force model trained directly, or a bug) make E_tot drift;
# * an energy that jumps (a descriptor cut off abruptly at r_c, a neighbour list that misses
#   pairs) makes E_tot jump whenever an atom crosses the cutoff;
# * too long a time step makes the fluctuations large and, beyond stability, E_tot explodes.
#
# This tutorial trains a small ethanol model (Python API this time), runs NVE at several time
# steps, and measures fluctuation and drift.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase.io import read

from nearsight import NearsightCalculator
from nearsight.simulate.md import run_md
from nearsight.training.config import validate_config
from nearsight.training.trainer import Trainer

QUICK = os.environ.get("NEARSIGHT_TUTORIAL_QUICK", "0") not in ("", "0")
OUT = Path(os.environ.get("NEARSIGHT_TUTORIAL_DIR", "outputs/tutorials/md_energy_conservation")).resolve()
OUT.mkdir(parents=True, exist_ok=True)
DATA = Path(__file__).resolve().parents[2] / "examples" / "data"

# %% [markdown]
# ## A model
#
# `Trainer(validate_config(dict)).train()` is what `nearsight train` runs; the dict is the YAML
# config as Python data. A short run is enough here: energy conservation depends on the forces
# being −∇E of a smooth energy, not on the model being accurate.

# %%
config = validate_config(
    {
        "dtype": "float64",
        "output_dir": str(OUT / "model"),
        "data": {
            "train": str(DATA / "ethanol_train300.xyz"),
            "reference_energies": str(DATA / "ethanol_isolated_atoms.xyz"),
            "max_train_frames": 150 if QUICK else None,
        },
        "model": {"cutoff": 5.0, "cutoff_angular": 3.5, "hidden": [64, 64]},
        "training": {
            "epochs": 40 if QUICK else 400,
            "max_time_minutes": 3 if QUICK else 5,  # a safety net: the epochs end the quick run
            "batch_size": 8,
            "sigma_energy": 0.5,
            "log_every": 10 if QUICK else 50,
            "checkpoint_every": 0,
        },
    },
    "tutorial",
)
model_path = Trainer(config).train()
# a short training sees few geometries, so MD soon leaves the descriptor ranges it saw: the
# calculator would warn (ExtrapolationWarning) each time more atoms do; here that is expected
calc = NearsightCalculator(model_path, dtype="float64", on_extrapolation="ignore")

# %% [markdown]
# ## One NVE run
#
# Start from a frame of the held-out data with Maxwell-Boltzmann velocities at 300 K (the
# centre-of-mass motion and, for a molecule, the rotation are removed). `run_md` records the
# energies at every step; `drift_ev_per_atom_ps` is the slope of a straight line fitted to
# E_tot, per atom.

# %%
start = read(DATA / "ethanol_test200.xyz", index=0)
steps = 400 if QUICK else 4000
result = run_md(start, calc, steps=steps, timestep_fs=0.5, temperature_K=300, ensemble="nve", seed=1)
print(
    f"{result.steps} steps of 0.5 fs: mean T {result.temperature.mean():.0f} K, "
    f"E_tot std {result.total_energy.std() * 1e3:.3f} meV, drift {result.drift_ev_per_atom_ps:.2e} eV/atom/ps"
)

# %% [markdown]
# E_pot and E_kin trade energy back and forth by tenths of an eV while their sum stays put:

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
e_pot = result.potential_energy - result.potential_energy[0]
ax.plot(result.time_ps, e_pot, label="E_pot − E_pot(0)")
ax.plot(result.time_ps, result.total_energy - result.potential_energy[0], label="E_tot − E_pot(0)")
ax.set_xlabel("time (ps)")
ax.set_ylabel("energy (eV)")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "nve_energies.png", dpi=120)
assert abs(result.drift_ev_per_atom_ps) < 1e-3
assert result.total_energy.std() < 0.05 * e_pot.std()

# %% [markdown]
# ## Fluctuation and drift against the time step
#
# The same start and velocities at Δt = 0.25, 0.5, 1 and 2 fs over the same simulated time.
# The fluctuation of E_tot (its standard deviation) should grow about fourfold per doubling of
# Δt (the Δt² of a second-order integrator); the drift stays small until Δt approaches the
# stability limit set by the fastest vibration (C–H and O–H stretches, periods near 10 fs).

# %%
time_fs = 100 if QUICK else 1000
rows = []
for dt in (0.25, 0.5, 1.0, 2.0):
    r = run_md(start, calc, steps=int(time_fs / dt), timestep_fs=dt, temperature_K=300, seed=1)
    rows.append((dt, r.total_energy.std(), r.drift_ev_per_atom_ps))
    print(
        f"dt {dt:4.2f} fs: E_tot std {r.total_energy.std() * 1e3:8.4f} meV, drift {r.drift_ev_per_atom_ps:+.2e} eV/atom/ps"
    )
dts, stds, drifts = map(np.array, zip(*rows, strict=True))
slope = np.polyfit(np.log(dts), np.log(stds), 1)[0]
print(f"E_tot fluctuation ∝ Δt^{slope:.2f}")

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.loglog(dts, stds * 1e3, "o-", label="measured")
ax.loglog(dts, stds[0] * 1e3 * (dts / dts[0]) ** 2, "--", label="∝ Δt²")
ax.set_xlabel("time step (fs)")
ax.set_ylabel("std of E_tot (meV)")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "fluctuation_vs_timestep.png", dpi=120)

# %% [markdown]
# The fluctuation follows Δt² closely, and the drift at 0.5 fs is far below what a thermostat
# would hide. `nearsight md ... --ensemble nve` prints the same drift at the end of a run, and
# `nearsight check MODEL --nve` (or `nearsight.testing.check_nve`) turns it into a pass/fail
# check with a tolerance of 1e-3 eV/atom/ps.

# %%
assert 1.5 < slope < 2.5, f"fluctuation ∝ Δt^{slope:.2f}, expected about Δt²"
assert np.all(np.diff(stds) > 0)
assert abs(drifts[dts == 0.5][0]) < 1e-3

# %% [markdown]
# ## With a thermostat
#
# Langevin dynamics (`ensemble="langevin"`, `nearsight md --ensemble langevin`) adds friction
# and random kicks: the temperature settles near its target, and E_tot is no longer conserved
# (so no drift is reported).

# %%
langevin = run_md(
    start,
    calc,
    steps=steps,
    timestep_fs=0.5,
    temperature_K=300,
    ensemble="langevin",
    friction_per_fs=0.02,
    seed=2,
)
print(f"Langevin: mean T over the second half {langevin.temperature[steps // 2 :].mean():.0f} K")
assert np.isnan(langevin.drift_ev_per_atom_ps)
assert 100 < langevin.temperature[steps // 2 :].mean() < 600
