# %% [markdown]
# # Train and validate a model
#
# From the bundled ethanol frames to a trained, evaluated and checked Behler-Parrinello
# potential, through the `nearsight` command line (each command is one subprocess, as you would
# type it in a shell). The data are 300 training and 200 held-out frames of ethanol from rMD17
# (`examples/data/`, PBE/def2-SVP energies and forces).
#
# The steps:
#
# 1. copy `examples/ethanol_bpnn.yaml` with a few overrides (`nearsight train`);
# 2. score the model on the 200 held-out frames (`nearsight evaluate`), with a parity plot;
# 3. run the physics checks on the trained model (`nearsight check`).
#
# With `NEARSIGHT_TUTORIAL_QUICK=1` the model trains on 120 frames for a few seconds; without it,
# on all 300 for the example's budget of 6 CPU minutes (its errors are in
# [Results: molecules](../results/molecules.md)).

# %%
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

QUICK = os.environ.get("NEARSIGHT_TUTORIAL_QUICK", "0") not in ("", "0")
OUT = Path(os.environ.get("NEARSIGHT_TUTORIAL_DIR", "outputs/tutorials/train_and_validate")).resolve()
OUT.mkdir(parents=True, exist_ok=True)
REPO = Path(__file__).resolve().parents[2]  # the repository: docs/tutorials/<this file>
EXAMPLES = REPO / "examples"


def nearsight(*args: str) -> str:
    """Run one `nearsight` command (as `python -m nearsight`), print and return its output."""
    run = subprocess.run([sys.executable, "-m", "nearsight", *args], capture_output=True, text=True)
    print(run.stdout + run.stderr)
    assert run.returncode == 0, f"nearsight {args[0]} failed with exit status {run.returncode}"
    return run.stdout


# %% [markdown]
# ## 1. The config
#
# A training run is one YAML file. The example trains a Behler-Parrinello network on ANI-style
# symmetry functions (radial cutoff 5 Å, angular 3.5 Å) with Adam, a plateau schedule and early
# stopping. Data paths in a config are relative to the config file, so a copy elsewhere names
# them in full. The [configuration reference](../reference/config.md) lists every key.

# %%
config = yaml.safe_load((EXAMPLES / "ethanol_bpnn.yaml").read_text())
for key in ("train", "test", "reference_energies"):
    config["data"][key] = str(EXAMPLES / config["data"][key])
config["output_dir"] = str(OUT / "run")
if QUICK:  # a few seconds of training: enough to see every step work
    config["data"]["max_train_frames"] = 120
    config["training"].update(epochs=25, max_time_minutes=3, log_every=5)  # the epochs end it
else:  # the example's 6-minute budget, counted in CPU time: a busy machine trains as far as an idle one
    config["training"]["time_limit_clock"] = "cpu"
config_path = OUT / "ethanol.yaml"
config_path.write_text(yaml.safe_dump(config, sort_keys=False))
print(config_path.read_text())

# %% [markdown]
# ## 2. Train
#
# `nearsight train` prints the output directory first and the saved model path last. The run
# directory holds `best_model.pt` (lowest validation loss), `final_model.pt`,
# `training_log.csv`, `learning_curve.png`, `parity_valid.png`, `parity_test.png` and
# `training_summary.json`. `--overwrite` lets us rerun the tutorial into the same directory
# (without it, `train` refuses a directory that already holds a run; `--resume` continues one).

# %%
lines = nearsight("train", str(config_path), "--overwrite").strip().splitlines()
model = Path(lines[-1])
assert model.name == "best_model.pt" and model.is_file()
summary = json.loads((model.parent / "training_summary.json").read_text())
print(json.dumps(summary, indent=1)[:1500])

# %% [markdown]
# ## 3. Evaluate on held-out frames
#
# `nearsight evaluate` finds the labels (here `energy` and `forces`), prints a table and writes
# the metrics as JSON and a parity plot (predicted against reference energies and force
# components). Energies are per structure in eV, forces per component in eV/Å.

# %%
metrics_path, parity = OUT / "test_metrics.json", OUT / "parity_test.png"
nearsight(
    "evaluate",
    str(model),
    str(EXAMPLES / "data" / "ethanol_test200.xyz"),
    "--json",
    str(metrics_path),
    "--plot",
    str(parity),
)
metrics = json.loads(metrics_path.read_text())
print({k: metrics[k] for k in ("n_frames", "energy_mae", "forces_mae", "forces_rmse")})

# %% [markdown]
# What the model should reach: even a few seconds of training gives forces well below the
# spread of the labels (the RMS force component of the data, about 1.2 eV/Å), and the full
# 6-minute run gets to a few tens of meV/Å (37 meV/Å for `bash scripts/demo.sh` on one core).

# %%
assert metrics["n_frames"] == 200
assert parity.is_file()
limit = 0.6 if QUICK else 0.15  # eV/Å
assert metrics["forces_mae"] < limit, f"force MAE {metrics['forces_mae']:.3f} eV/Å, expected < {limit}"

# %% [markdown]
# ## 4. Check the physics of the trained model
#
# Low errors on test frames do not show that a model is fit to simulate with. `nearsight check`
# runs the checks of [`nearsight.testing`](../reference/api/testing.md) on the model: invariance
# under rotations, reflections, translations and permutations of like atoms, forces equal to
# −∇E (finite differences), stress (finite strain) and extensivity on a periodic cell,
# additivity of far-apart fragments, isolated-atom energies and smoothness at the cutoffs.
# Without structures it builds a random molecule and a random periodic cell of the model's
# elements. Exit status 0 means every check passed; the table says what each one measured.

# %%
report = nearsight("check", str(model), "--json", str(OUT / "checks.json"))
assert "0 failed" in report.strip().splitlines()[-1]

# %% [markdown]
# ## Next
#
# * Use the model in Python: `NearsightCalculator(model)` is an ASE calculator
#   ([Python API tour](../guide/python.md)), and `nearsight md` runs MD with it
#   ([MD and energy conservation](md_energy_conservation.md)).
# * Train a committee (`nearsight train CONFIG --members 4`) for error bars
#   ([Committees and uncertainty](committee_uncertainty.md)).
# * Training options (resume, schedules, stages, Δ-learning): [Training runs](../guide/training.md).
