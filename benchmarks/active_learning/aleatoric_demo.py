"""Aleatoric vs epistemic uncertainty on water (HF/6-31G* MD frames from run_demo.py).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/active_learning/aleatoric_demo.py

Label noise of known variance is injected in one region of configuration space (frames whose
H-O-H angle exceeds the pool's median: force components + N(0, 0.2² eV²/Å²), energy +
N(0, 0.05² eV²)).  A committee is trained on the noisy pool and a heteroscedastic head is fitted
to its residuals (Gaussian NLL).  On the clean test frames the aleatoric σ should recover the
injected noise in the noisy region and stay small elsewhere; the committee (epistemic) σ should
grow for geometries away from the training data (stretched O-H bonds), whatever the noise.
Writes ``aleatoric.json``, ``ALEATORIC.md`` and ``aleatoric.png`` here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.io import write

from nearsight.active_learning import load_al_config
from nearsight.uncertainty import EnsembleCalculator, atomic_write, fit_aleatoric_head

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = HERE / "work"
SIGMA_F, SIGMA_E = 0.2, 0.05


def main() -> None:
    import torch
    from run_demo import committee_on, read_labelled

    torch.set_num_threads(1)
    cfg = load_al_config(ROOT / "examples" / "active_learning.yaml")
    pool = read_labelled(WORK / "pool.xyz")
    test = read_labelled(WORK / "test.xyz")
    angle = lambda a: a.get_angle(1, 0, 2)  # noqa: E731
    cut = float(np.median([angle(a) for a in pool]))
    rng = np.random.default_rng(7)
    noisy = []
    for a in pool:
        b = Atoms(numbers=a.numbers, positions=a.positions)
        e, f = a.info["energy"], a.arrays["forces"]
        if angle(a) > cut:
            e, f = e + rng.normal() * SIGMA_E, f + rng.normal(size=f.shape) * SIGMA_F
        b.info["energy"], b.arrays["forces"] = e, f
        noisy.append(b)
    out = WORK / "aleatoric"
    calc = committee_on(noisy, cfg, out, log=None)
    head = fit_aleatoric_head(calc, noisy, hidden=(32,), epochs=600)
    ens = EnsembleCalculator([ff.model for ff in calc.members], aleatoric=head)

    def sigmas(frames):
        rows = []
        for a in frames:
            ens.calculate(Atoms(numbers=a.numbers, positions=a.positions), ["energy", "forces"])
            r = ens.results
            err = r["forces"] - a.arrays["forces"] if "forces" in a.arrays else np.full((len(a), 3), np.nan)
            rows.append(
                (
                    r["forces_aleatoric_std"].mean(),
                    np.sqrt((r["forces_std"] ** 2).mean()),
                    r["energy_aleatoric_std"],
                    np.sqrt(np.mean(err**2)),
                )
            )
        return np.array(rows)

    s_test = sigmas(test)
    in_region = np.array([angle(a) > cut for a in test])
    # away from the data: stretch one O-H bond of the equilibrium geometry
    stretched = []
    for d in np.linspace(0.9, 1.6, 8):
        w = molecule("H2O")
        v = w.positions[1] - w.positions[0]
        w.positions[1] = w.positions[0] + v / np.linalg.norm(v) * d
        w.info["r_OH"] = float(d)
        stretched.append(w)
    s_str = sigmas(stretched)
    train_r = [np.linalg.norm(a.positions[i] - a.positions[0]) for a in pool for i in (1, 2)]
    res = {
        "injected_sigma_forces": SIGMA_F,
        "injected_sigma_energy": SIGMA_E,
        "angle_cut_deg": cut,
        "test_noisy_region": {
            "n": int(in_region.sum()),
            "aleatoric_sigma_forces_median": float(np.median(s_test[in_region, 0])),
            "aleatoric_sigma_energy_median": float(np.median(s_test[in_region, 2])),
            "epistemic_sigma_forces_median": float(np.median(s_test[in_region, 1])),
            "force_rmse_vs_clean_labels": float(np.sqrt(np.mean(s_test[in_region, 3] ** 2))),
        },
        "test_clean_region": {
            "n": int((~in_region).sum()),
            "aleatoric_sigma_forces_median": float(np.median(s_test[~in_region, 0])),
            "aleatoric_sigma_energy_median": float(np.median(s_test[~in_region, 2])),
            "epistemic_sigma_forces_median": float(np.median(s_test[~in_region, 1])),
            "force_rmse_vs_clean_labels": float(np.sqrt(np.mean(s_test[~in_region, 3] ** 2))),
        },
        "training_r_OH_range": [float(min(train_r)), float(max(train_r))],
        "stretched": [
            {
                "r_OH": float(w.info["r_OH"]),
                "aleatoric_sigma_forces": float(s[0]),
                "epistemic_sigma_forces": float(s[1]),
            }
            for w, s in zip(stretched, s_str)
        ],
        "head_final_nll": head.metadata["final_nll"],
    }
    atomic_write(HERE / "aleatoric.json", lambda fh: json.dump(res, fh, indent=1))
    n, c = res["test_noisy_region"], res["test_clean_region"]
    lines = [
        "# Aleatoric vs epistemic uncertainty (generated by aleatoric_demo.py)",
        "",
        f"Water, HF/6-31G* MD frames; noise injected into the training labels of frames with H-O-H angle > "
        f"{cut:.1f}° (force components σ = {SIGMA_F} eV/Å, energy σ = {SIGMA_E} eV).  Committee of "
        f"{cfg['committee']['n_members']} + heteroscedastic head (Gaussian NLL on the committee residuals).",
        "",
        "| clean test frames | n | aleatoric σ_F median (eV/Å) | aleatoric σ_E median (eV) | epistemic σ_F (eV/Å) |",
        "|---|---|---|---|---|",
        f"| noisy region | {n['n']} | {n['aleatoric_sigma_forces_median']:.3f} | "
        f"{n['aleatoric_sigma_energy_median']:.3f} | {n['epistemic_sigma_forces_median']:.3f} |",
        f"| clean region | {c['n']} | {c['aleatoric_sigma_forces_median']:.3f} | "
        f"{c['aleatoric_sigma_energy_median']:.3f} | {c['epistemic_sigma_forces_median']:.3f} |",
        "",
        f"Away from the data (one O-H bond stretched; training range r_OH = "
        f"{res['training_r_OH_range'][0]:.2f}–{res['training_r_OH_range'][1]:.2f} Å):",
        "",
        "| r_OH (Å) | aleatoric σ_F | epistemic σ_F (committee RMS) |",
        "|---|---|---|",
    ]
    for s in res["stretched"]:
        lines.append(
            f"| {s['r_OH']:.2f} | {s['aleatoric_sigma_forces']:.3f} | {s['epistemic_sigma_forces']:.3f} |"
        )
    atomic_write(HERE / "ALEATORIC.md", lambda fh: fh.write("\n".join(lines) + "\n"))
    write(out / "noisy_pool.xyz", noisy)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(
        [s["r_OH"] for s in res["stretched"]],
        [s["epistemic_sigma_forces"] for s in res["stretched"]],
        "o-",
        label="epistemic (committee)",
    )
    ax.plot(
        [s["r_OH"] for s in res["stretched"]],
        [s["aleatoric_sigma_forces"] for s in res["stretched"]],
        "s--",
        label="aleatoric (NLL head)",
    )
    ax.axvspan(*res["training_r_OH_range"], color="0.9", label="training range")
    ax.set_xlabel("r_OH (Å)")
    ax.set_ylabel("force σ (eV/Å)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "aleatoric.png", dpi=120)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
