# %% [markdown]
# # Active learning with PySCF
#
# A potential is only trustworthy where it has data. Active learning lets the model choose its
# own data: run MD with a *committee* of models, stop where the members disagree, label a few
# of those structures with quantum chemistry, retrain, and repeat until MD runs without
# disagreement (see [Active learning](../concepts/active-learning.md)).
#
# `nearsight active-learn examples/active_learning.yaml` runs this loop for water with a real
# QM oracle, PySCF Hartree-Fock/6-31G* (about 23 minutes to convergence,
# [Results](../results/active-learning.md)). This tutorial runs the same loop from Python with a
# smaller committee, shorter MD and a looser threshold, and looks at what it wrote.

# %%
import json
import os
from pathlib import Path

import numpy as np
import yaml
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from nearsight.active_learning import load_al_config, make_oracle, run_active_learning
from nearsight.qm import LabelStore

QUICK = os.environ.get("NEARSIGHT_TUTORIAL_QUICK", "0") not in ("", "0")
OUT = Path(os.environ.get("NEARSIGHT_TUTORIAL_DIR", "outputs/tutorials/active_learning")).resolve()
OUT.mkdir(parents=True, exist_ok=True)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# %% [markdown]
# ## The config
#
# The example config names the start structures (`seeds`: 10 water geometries, unlabelled), the
# oracle, the committee and its training config, the exploration (Langevin MD at 300 and 600 K)
# and the selection (a trajectory stops where the largest per-atom force σ of the committee
# passes `select.threshold`; up to `batch_size` diverse frames of those above
# `min_sigma_fraction × threshold` are labelled). Every key is in the
# [configuration reference](../reference/config.md#active-learning-config-nearsight-active-learn).

# %%
raw = yaml.safe_load((EXAMPLES / "active_learning.yaml").read_text())
print(yaml.safe_dump(raw, sort_keys=False))
raw.update(output_dir=str(OUT / "run"), max_iterations=2 if QUICK else 8)
# label in this process: worker processes (n_workers > 0, or a timeout) start fresh Python
# interpreters that import the calling script, which then needs an `if __name__ == "__main__":`
# guard; `nearsight active-learn` has one
raw["labelling"] = {"n_workers": 0, "timeout_s": None}
raw["committee"]["n_members"] = 2 if QUICK else 3
if QUICK:  # small members, short trajectories
    raw["committee"]["train"]["model"]["hidden"] = [16]
    raw["committee"]["train"]["training"].update(epochs=200, max_steps=150, valid_every=20)
    raw["explore"].update(steps=60, n_starts=2, interval=5)
    raw["select"].update(threshold=0.5, batch_size=4)
else:
    raw["explore"].update(steps=500)

# %% [markdown]
# ## A test set from the oracle
#
# To see whether the loop helps, label a few independent geometries with the same oracle
# (`make_oracle` builds it from the config's `oracle` entry; calling it returns a `Label` with
# energy in eV and forces in eV/Å, or a recorded failure). The loop evaluates the committee on
# them after each retraining.

# %%
oracle = make_oracle(raw["oracle"])
rng = np.random.default_rng(123)
test = []
for atoms in read(EXAMPLES / "data" / "water_seeds.xyz", index=":")[:6]:
    atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
    label = oracle(atoms)
    assert label.ok, label.error
    atoms.calc = SinglePointCalculator(atoms, energy=label.energy, forces=label.forces)
    test.append(atoms)
write(OUT / "test.extxyz", test)
raw["test"] = str(OUT / "test.extxyz")
cfg = load_al_config(raw, base=EXAMPLES)  # relative paths (seeds) resolve against examples/

# %% [markdown]
# ## Run the loop
#
# Each iteration trains the committee on every label so far, evaluates it on the test set,
# explores, selects and labels. Labels go into `labels.db` (an ASE SQLite database, one row
# per label with its provenance) and the progress into `state.json`, so the run survives a
# kill: `run_active_learning(cfg, resume=True)` (`nearsight active-learn CONFIG --resume`)
# continues where it stopped. A finished run stays finished, so rerunning this cell in the
# same directory needs a fresh `output_dir`.

# %%
state_file = Path(cfg["output_dir"]) / "state.json"
state = run_active_learning(cfg, resume=state_file.is_file())
print("status:", state["status"])
for record in state["history"]:
    test_err = record.get("test", {})
    print(
        f"iteration {record['iteration']}: {record['n_labels']:3d} labels, "
        f"{record['triggered']} of {len(record['trajectories'])} trajectories triggered, "
        f"{record.get('selected', 0)} selected; test force MAE {test_err.get('forces_mae', float('nan')):.3f} eV/Å"
    )

# %% [markdown]
# In the quick mode the members train for 150 steps only, so the test errors stay large (the
# members are far from converged) even as they fall with the labels; the full mode trains as the
# example does.
#
# ## What the loop wrote
#
# Every label records why it was computed: `selection` (`seed` or `committee`), the `iteration`,
# the committee `sigma` that triggered it, and the oracle's method and basis. No geometry is
# labelled twice.

# %%
store = LabelStore(Path(cfg["output_dir"]) / "labels.db")
rows = list(store.db.select())
print(
    f"{len(rows)} labels; by selection:",
    {s: sum(r.get("selection") == s for r in rows) for s in ("seed", "committee")},
)
picked = [r for r in rows if r.get("selection") == "committee"]
for r in picked[:5]:
    print(f"iteration {r.iteration}: σ = {r.sigma:.3f} eV/Å, E = {r.energy:.4f} eV")
print(json.dumps(state["history"][-1].get("test", {}), indent=1)[:600])

# %% [markdown]
# The checks below are what the loop promises: the seeds are labelled first, every iteration
# that triggered added labels, every committee pick had a σ of at least
# `min_sigma_fraction × threshold`, and the labels are distinct.

# %%
n_seeds = len(read(cfg["seeds"], index=":"))
assert sum(r.get("selection") == "seed" for r in rows) == n_seeds
assert state["status"] in ("converged", "max_iterations")
labels = [rec["n_labels"] for rec in state["history"]]
assert labels[0] == n_seeds and all(b >= a for a, b in zip(labels, labels[1:], strict=False))
assert picked, "no trajectory triggered: lower select.threshold to see the loop pick structures"
floor = cfg["select"]["min_sigma_fraction"] * cfg["select"]["threshold"]
assert all(r.sigma >= floor for r in picked)
assert len({r.get("hash") for r in rows}) == len(rows)
assert all("forces_mae" in rec["test"] for rec in state["history"])
