"""A diabatic model of CH2NH2+ learned from SA2-CASSCF(2,2)/6-31G labels (issue 18): held-out
errors per state, couplings, the learned S1/S0 intersection checked by the oracle, and a swarm of
surface-hopping trajectories from S1 on the learned model.

Steps (each writes into ``--out``; the data come from ``benchmarks/ch2nh2_data.py``):

1. split the labelled frames 80/20 (seeded) into ``train.extxyz`` / ``test.extxyz``;
2. train ``examples/ch2nh2_diabatic.yaml`` (or ``--model-type bpnn``: invariant descriptors, scalar
   couplings only) for ``--minutes`` CPU minutes on the other 240 frames and, by default, all 900
   frames of the three further draws (``--extra-train``);
3. test errors: per-state energy and force MAE, sign-free coupling MAE and mean |cos|, and for the
   test frames near the intersection (oracle gap < 0.5 eV) the gap error;
4. the learned minimum-energy conical intersection (penalty method of Levine, Coe & Martínez,
   J. Phys. Chem. B 112, 405 (2008): minimise (E_0 + E_1)/2 + σ ΔE²/(ΔE + α)) from the test frame
   of smallest gap, then the oracle's gap at that geometry (one SA-CASSCF call);
5. ``--fssh N``: N trajectories from S1 (harmonic Wigner sampling at 0 K about the learned S0
   minimum, found from ``--start``), 0.5 fs steps for ``--fs`` fs, decoherence 0.1 Eh; S1 population
   over time into ``fssh/populations.csv``.

Reproduce:  OMP_NUM_THREADS=1 python benchmarks/ch2nh2_diabatic.py --minutes 30 --fssh 100
Results: ``--out``/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import read, write
from ethanol_equivariant import apply_overrides

from nearsight import keys
from nearsight.data.neighbours import atoms_to_graph
from nearsight.data.readers import read_frames
from nearsight.models.forcefield import ForceField
from nearsight.models.io import load_model
from nearsight.training.config import load_config, validate_config
from nearsight.training.metrics import compute_metrics, predict
from nearsight.training.trainer import Trainer

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "ch2nh2_diabatic.yaml"
EXTRA = {name: name for name in ("state_energies", "state_forces", "state_couplings")}
FS_PER_AU = 0.02418884326585747


def split(
    data: Path, out: Path, test_fraction: float, seed: int, extra_train: list[Path] = ()
) -> tuple[Path, Path]:
    """``data`` split into train and test; every frame of ``extra_train`` joins the training set
    (so that added data can be judged on the same test frames)."""
    frames = read(data, ":")
    order = np.random.default_rng(seed).permutation(len(frames))
    n_test = int(round(test_fraction * len(frames)))
    paths = out / "train.extxyz", out / "test.extxyz"
    extra = [frame for path in extra_train for frame in read(path, ":")]
    write(paths[0], [frames[i] for i in sorted(order[n_test:])] + extra, format="extxyz")
    write(paths[1], [frames[i] for i in sorted(order[:n_test])], format="extxyz")
    return paths


def train(
    train_file: Path,
    out: Path,
    minutes: float,
    model_type: str,
    seed: int,
    couplings: str | None = None,
    coupling_weight: float | None = None,
    direction_weight: float | None = None,
    overrides: list[str] = (),
) -> Path:
    config = load_config(EXAMPLE)
    if couplings is not None:
        config["model"]["couplings"] = couplings
    if coupling_weight is not None:
        config["training"]["loss"]["state_couplings"]["weight"] = coupling_weight
    if direction_weight is not None:  # 0 removes the example's direction term
        config["training"]["loss"].pop("state_coupling_directions", None)
        if direction_weight > 0:
            config["training"]["loss"]["state_coupling_directions"] = {"weight": direction_weight}
    config["data"]["train"] = str(train_file)
    config["output_dir"] = str(out / "run")
    config["seed"] = seed
    config["training"]["max_time_minutes"] = minutes
    config["training"]["early_stopping_patience"] = 10_000  # the CPU budget ends the run
    apply_overrides(config, list(overrides))
    if model_type == "bpnn":  # invariant descriptors: only couplings that keep their sign
        model = config["model"]
        model.update(type="bpnn", equivariant=None, couplings="scalar", cutoff_angular=4.0, hidden=[64, 64])
    config = validate_config(config)
    return Trainer(config).train()


def direction_weight(override: float | None) -> float:
    """The λ of the coupling-direction term a run trains with (``override`` or the example's)."""
    if override is not None:
        return override
    loss = load_config(EXAMPLE)["training"]["loss"]
    return float(loss.get("state_coupling_directions", {}).get("weight", 0.0))


def test_errors(model, test_file: Path) -> dict:
    frames = read_frames(test_file, extra_labels=EXTRA)
    preds = predict(model, frames)
    m = compute_metrics(frames, preds)
    gaps = np.array([f.labels["state_energies"][1] - f.labels["state_energies"][0] for f in frames])
    pred_gaps = np.array([p["state_energies"][1] - p["state_energies"][0] for p in preds])
    near = gaps < 0.5
    cosines = []  # per frame, sign-free: |h·h_ref| / (|h| |h_ref|) over all atoms
    for frame, pred in zip(frames, preds, strict=True):
        h, h_ref = np.ravel(pred["state_couplings"]), np.ravel(frame.labels["state_couplings"])
        cosines.append(abs(h @ h_ref) / (np.linalg.norm(h) * np.linalg.norm(h_ref)))
    cosines = np.array(cosines)
    bands = {"gap < 0.5 eV": gaps < 0.5, "0.5-5 eV": (gaps >= 0.5) & (gaps < 5), "gap >= 5 eV": gaps >= 5}
    return {
        "n_test": len(frames),
        "energy_mae_meV": [1000 * v for v in m["state_energies_mae"]],
        "forces_mae_meV_per_A": [1000 * v for v in m["state_forces_mae"]],
        "couplings_mae_meV_per_A": 1000 * m["state_couplings_mae"],
        "couplings_sign_free_cosine": m["state_couplings_cosine"],
        "couplings_cosine_median": float(np.median(cosines)),
        "couplings_cosine_below_0.5": float((cosines < 0.5).mean()),
        "couplings_cosine_by_gap": {
            band: {"frames": int(mask.sum()), "mean_cosine": float(cosines[mask].mean())}
            for band, mask in bands.items()
            if mask.any()
        },
        "near_intersection_frames": int(near.sum()),
        "near_intersection_gap_mae_meV": float(1000 * np.abs(pred_gaps - gaps)[near].mean())
        if near.any()
        else None,
        "smallest_oracle_gap_eV": float(gaps.min()),
        "model_gap_there_eV": float(pred_gaps[np.argmin(gaps)]),
        "_start": int(np.argmin(gaps)),
    }


def learned_intersection(model, atoms, steps: int = 400, sigma: float = 3.5, alpha: float = 0.02):
    """Penalty-function minimum-energy conical intersection of the learned surfaces from ``atoms``."""
    ff = ForceField(model).double().eval()
    graph = atoms_to_graph(atoms, ff.cutoff, torch.float64)  # all pairs: fixed for a small molecule
    positions = graph[keys.POSITIONS].clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([positions], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def objective():
        optimiser.zero_grad()
        E = ff({**graph, keys.POSITIONS: positions}, forces=False)[keys.STATE_ENERGIES][0]
        gap = E[1] - E[0]
        f = 0.5 * (E[0] + E[1]) + sigma * gap**2 / (gap + alpha)
        f.backward()
        return f

    optimiser.step(objective)
    result = atoms.copy()
    result.positions = positions.detach().numpy()
    E = ff({**graph, keys.POSITIONS: positions.detach()}, forces=False)[keys.STATE_ENERGIES][0].detach()
    return result, float(E[1] - E[0])


def oracle_gap(atoms) -> float:
    from nearsight.qm.casscf import SACASSCFOracle

    label = SACASSCFOracle(basis="6-31g", charge=1)(atoms)
    if not label.ok:
        raise RuntimeError(label.error)
    energies = label.extra["state_energies"]
    return float(energies[1] - energies[0])


def learned_minimum(model, start):
    from ase.optimize import BFGS

    from nearsight.calculator import NearsightCalculator

    atoms = start.copy()
    atoms.calc = NearsightCalculator(model)
    BFGS(atoms, logfile=None).run(fmax=1e-3, steps=500)
    return atoms


def fssh(model, atoms, out: Path, n: int, fs: float, swarm_size: int) -> dict:
    from nearsight.nonadiabatic.molecule import MolecularDiabatic
    from nearsight.simulate.swarm_run import molecular_problem, run_swarms

    problem = molecular_problem(MolecularDiabatic(model, atoms), 0.0, {"model": "ch2nh2"})
    dt = 0.5 / FS_PER_AU
    steps = int(round(fs / 0.5))
    result = run_swarms(
        problem, out, trajectories=n, swarm_size=swarm_size, timestep_au=dt, steps=steps, state=1,
        decoherence=0.1, seed=0, record_every=4, resume=(out / "checkpoint.pt").exists(), progress=print,
    )  # fmt: skip
    t_fs = (result.time_au * FS_PER_AU).tolist()
    s1 = result.active[:, 1].tolist()
    half = next((t for t, p in zip(t_fs, s1) if p <= 0.5), None)
    return {"trajectories": n, "time_fs": t_fs, "s1_active": s1, "s1_half_life_fs": half,
            "hops": result.total_hops, "frustrated": result.frustrated}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=HERE / "data" / "ch2nh2_sa2casscf.extxyz")
    parser.add_argument(
        "--extra-train", type=Path, nargs="*", default=[HERE / "data" / f"ch2nh2_sa2casscf_seed{s}.extxyz" for s in (1, 2, 3)],
        help="more labelled frames, all for training (default: the three other draws; none: --extra-train)",
    )  # fmt: skip
    parser.add_argument("--couplings", choices=("scalar", "pseudoscalar", "both"), default=None,
                        help="override the example config's coupling symmetry")  # fmt: skip
    parser.add_argument("--coupling-weight", type=float, default=None, help="override the coupling term's λ")
    parser.add_argument(
        "--direction-weight", type=float, default=None,
        help="override the coupling-direction term's λ (state_coupling_directions; 0 removes it)",
    )  # fmt: skip
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=YAML",
        help="override a config value, e.g. --set training.clip_grad_norm=10",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/ch2nh2_benchmark"))
    parser.add_argument("--minutes", type=float, default=15.0, help="CPU minutes of training")
    parser.add_argument("--model-type", choices=("equivariant", "bpnn"), default="equivariant")
    parser.add_argument("--model", type=Path, default=None, help="skip training: this model file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-oracle", action="store_true", help="skip the oracle check of the learned MECI")
    parser.add_argument("--fssh", type=int, default=0, help="surface-hopping trajectories from S1")
    parser.add_argument("--fs", type=float, default=100.0)
    parser.add_argument("--swarm-size", type=int, default=100)
    parser.add_argument("--start", type=Path, default=HERE / "data" / "ch2nh2_s0_min.xyz")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    train_file, test_file = split(args.data, args.out, 0.2, args.seed, args.extra_train)
    start = time.process_time()
    path = args.model or train(
        train_file, args.out, args.minutes, args.model_type, args.seed, args.couplings, args.coupling_weight,
        args.direction_weight, args.overrides,
    )  # fmt: skip
    model = load_model(path, dtype=torch.float64)
    results = {
        "model": str(path),
        "model_type": args.model_type,
        "couplings": model.couplings,
        "direction_weight": direction_weight(args.direction_weight),
        "overrides": args.overrides,
        "extra_train": [str(p) for p in args.extra_train],
        "n_train": len(read(train_file, ":")),
        "train_cpu_s": time.process_time() - start,
    }
    results["test"] = test_errors(model, test_file)
    begin = read(test_file, results["test"].pop("_start"))
    meci, gap = learned_intersection(model, begin)
    write(args.out / "learned_meci.xyz", meci)
    results["learned_meci"] = {"model_gap_eV": gap}
    if not args.no_oracle:
        results["learned_meci"]["oracle_gap_eV"] = oracle_gap(meci)
    if args.fssh:
        minimum = learned_minimum(model, read(args.start) if args.start.exists() else read(test_file, 0))
        write(args.out / "learned_s0_min.xyz", minimum)
        results["fssh"] = fssh(model, minimum, args.out / "fssh", args.fssh, args.fs, args.swarm_size)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "fssh"}, indent=2))
    if "fssh" in results:
        f = results["fssh"]
        print(
            f"FSSH: {f['trajectories']} trajectories, S1 half-life {f['s1_half_life_fs']} fs, hops {f['hops']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
