# %% [markdown]
# # Committees and uncertainty
#
# A single model gives a number without an error bar. A *committee* of models trained the same
# way from different random starts agrees where the data pin the answer down and disagrees
# elsewhere; the spread σ of their predictions is an estimate of the (epistemic) error. It is
# only an estimate: members trained on the same data share their mistakes, so σ is usually too
# small and has to be *calibrated* against real errors before it is used as an error bar (see
# [Uncertainty](../concepts/uncertainty.md)).
#
# This tutorial trains a committee of three small models on ethanol, compares σ with the real
# force errors on held-out frames, calibrates it, and checks that σ grows away from the data.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase.io import read

from nearsight.training.config import validate_config
from nearsight.uncertainty import EnsembleCalculator, calibration_report, fit_sigma_scale, train_committee

QUICK = os.environ.get("NEARSIGHT_TUTORIAL_QUICK", "0") not in ("", "0")
OUT = Path(os.environ.get("NEARSIGHT_TUTORIAL_DIR", "outputs/tutorials/committee_uncertainty")).resolve()
OUT.mkdir(parents=True, exist_ok=True)
DATA = Path(__file__).resolve().parents[2] / "examples" / "data"

# %% [markdown]
# ## Train the members
#
# `train_committee(config, n_members=K)` trains K models with seeds seed, seed + 1, … in
# `output_dir/member_k` (the command line: `nearsight train CONFIG --members K`). The members
# share the train/validation split and differ in their initial weights and batch order. A
# finished member is not trained again when the call is repeated.

# %%
config = validate_config(
    {
        "dtype": "float64",
        "output_dir": str(OUT / "committee"),
        "data": {
            "train": str(DATA / "ethanol_train300.xyz"),
            "reference_energies": str(DATA / "ethanol_isolated_atoms.xyz"),
            "max_train_frames": 100 if QUICK else None,
        },
        "model": {"cutoff": 5.0, "cutoff_angular": 3.5, "hidden": [32] if QUICK else [64, 64]},
        "training": {
            "epochs": 20 if QUICK else 400,
            "max_time_minutes": 2 if QUICK else 4,  # a safety net: the epochs end the quick run
            "batch_size": 8,
            "sigma_energy": 0.5,
            "log_every": 10 if QUICK else 100,
            "checkpoint_every": 0,
        },
    },
    "tutorial",
)
members = train_committee(config, n_members=3)
print(members)

# %% [markdown]
# ## σ against the real error
#
# `EnsembleCalculator(members)` is an ASE calculator: its energy and forces are the committee
# mean, and `results` adds the spread, here `forces_std` (per force component, eV/Å). On
# held-out frames we compare σ with the error of the mean, component by component.

# %%
calc = EnsembleCalculator(members, on_extrapolation="ignore")
test = read(DATA / "ethanol_test200.xyz", index=":40" if QUICK else ":")
errors, sigmas = [], []
for atoms in test:
    reference = atoms.get_forces()  # the labels (extxyz forces)
    probe = atoms.copy()
    probe.calc = calc
    errors.append((probe.get_forces() - reference).ravel())
    sigmas.append(calc.results["forces_std"].ravel())
errors, sigmas = np.concatenate(errors), np.concatenate(sigmas)
raw = calibration_report(errors, sigmas)
print({k: round(v, 4) for k, v in raw.items()})

# %% [markdown]
# `calibration_report` gives
#
# * `spearman`: rank correlation of |error| and σ (0: σ says nothing; 1: perfect ranking);
# * `sigma_scale`: the factor s that makes the errors most likely as Gaussians of width s·σ
#   (maximum likelihood: s² = mean(error²/σ²));
# * `miscalibration_area`: the area between the observed and the expected fraction of errors
#   inside each confidence interval (0 for a calibrated σ), before and after scaling;
# * `nll`: the Gaussian negative log-likelihood of the errors, before and after scaling.
#
# A committee trained on the same frames is over-confident (s > 1). The scale is fitted on one
# half of the frames and judged on the other, as one would for new data.

# %%
half = errors.size // 2
scale = fit_sigma_scale(errors[:half], sigmas[:half])
held_out = calibration_report(errors[half:], sigmas[half:], scale=scale)
print(f"fitted σ scale {scale:.2f}")
print(
    f"held-out half: miscalibration area {held_out['miscalibration_area_raw']:.3f} -> "
    f"{held_out['miscalibration_area_scaled']:.3f}, NLL {held_out['nll_raw']:.2f} -> {held_out['nll_scaled']:.2f}"
)

fig, ax = plt.subplots(figsize=(5, 4))
ax.loglog(sigmas, np.abs(errors), ".", alpha=0.3, ms=3)
line = np.array([sigmas.min(), sigmas.max()])
ax.loglog(line, scale * line, "k--", label=f"|error| = {scale:.1f} σ")
ax.set_xlabel("committee σ of a force component (eV/Å)")
ax.set_ylabel("|error| (eV/Å)")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "sigma_vs_error.png", dpi=120)

# %%
assert raw["spearman"] > 0.1, "σ should rank the errors better than chance"
assert scale > 1.0, "a committee on shared data is over-confident"
assert held_out["miscalibration_area_scaled"] < held_out["miscalibration_area_raw"]
assert held_out["nll_scaled"] < held_out["nll_raw"]

# %% [markdown]
# Pass the scale to the calculator (`EnsembleCalculator(members, sigma_scale=scale)`) and every
# `*_std` it reports is multiplied by it: error bars for MD, properties
# (`nearsight.properties` computes mean ± σ for a committee) and the active-learning trigger.
#
# ## Away from the data
#
# What σ is for: telling you when a structure is unlike the training data. Stretch the C–O
# bond of a test frame (a geometry never seen in 300 K MD) and the members part ways. (In the
# quick mode the members train for seconds, so they disagree a lot everywhere and the contrast is
# smaller than with the full training.)

# %%
calibrated = EnsembleCalculator(members, sigma_scale=scale, on_extrapolation="ignore")
start = test[0].copy()
c, o = [i for i, s in enumerate(start.get_chemical_symbols()) if s in "CO"][1:3]
rows = []
for stretch in (0.0, 0.3, 0.6, 0.9):
    atoms = start.copy()
    atoms.set_distance(c, o, start.get_distance(c, o) + stretch, fix=0)
    atoms.calc = calibrated
    atoms.get_forces()
    rows.append((stretch, calibrated.results["max_force_std"]))
    print(f"C–O stretched by {stretch:.1f} Å: largest per-atom force σ {rows[-1][1]:.3f} eV/Å (calibrated)")
sig = [r[1] for r in rows]
assert all(b > a for a, b in zip(sig, sig[1:], strict=False)), "σ should grow away from the training data"
assert sig[-1] > 1.3 * sig[0]
