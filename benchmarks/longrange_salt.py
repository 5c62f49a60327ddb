"""Synthetic molten salt: does a charge head + Ewald learn ±1 charges from energies and forces alone?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/longrange_salt.py [--frames 360] [--minutes 6] \
        [--out /tmp/longrange_salt] [--json benchmarks/results/longrange_salt.json]

Reference system: Na⁺ and Cl⁻ point charges q = ±1 e in a cubic periodic box, with

    E = E_Ewald(q) + Σ_{i<j} A_ij exp(−r_ij/ρ) S(r_ij),    A_ij = c_ij b exp((σ_i + σ_j)/ρ)

the exact Ewald energy of the charges (:class:`nearsight.longrange.Coulomb`, Ewald, accuracy
1e-8 eV/Å) plus the Born-Mayer repulsion of the Tosi-Fumi NaCl model (Tosi & Fumi, J. Phys. Chem.
Solids 25, 45 (1964): b = 0.338e-19 J = 0.2110 eV, ρ = 0.317 Å, σ_Na = 1.170 Å, σ_Cl = 1.585 Å,
c_{+-} = 1, c_{++} = 1.25, c_{--} = 0.75; its dispersion terms are left out), switched off by the
quintic S(r) between 4 and 5 Å (where it is below 1e-3 eV).  Forces are autograd derivatives.

Frames: 16 to 32 ion pairs (32 to 64 ions) per box at the molten-salt number density
0.016 pairs/Å³ (±10 %), half placed at random (``config_type=random``: unlike ions ≥ 2.3 Å
apart, like ions ≥ 3.0 Å, unscreened charge fluctuations), half snapshots of Langevin MD with the
reference potential at 1500 K started from such a placement (``config_type=md``: screened
liquid).  20 % of the frames are the test set.

Two models are trained through the normal config path (:class:`~nearsight.training.trainer.Trainer`,
extxyz files, ``training.max_time_minutes`` of CPU time, ``scheduler: budget``), with the same
BPNN (ACSF, r_c = 6 Å, hidden [64, 64]) on energies and forces only (no charge labels):
(a) ``short``: the BPNN alone; (b) ``coulomb``: the same with ``model.longrange.coulomb``
(charge head, Ewald at accuracy 1e-5 eV/Å; the head starts from the per-element charges fitted to
the training energies, ``model.longrange.initial_charges: fit``, the default).  Reported: the test RMSE of energies (meV/atom) and
forces (meV/Å) of each, their ratio (goal: long-range ≤ 1/5 of short-range), and the learned
charges per element over the test frames (mean and standard deviation; goal: within 0.05 of ±1).
The energy does not change under q → −q, so the sign is fixed by convention: all charges are
multiplied by the sign of the mean Na charge (reported as ``sign_flipped``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import vesin
import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from nearsight import keys
from nearsight.longrange import Coulomb

ROOT = Path(__file__).resolve().parents[1]
NA, CL = 11, 17
CHARGE = {NA: 1.0, CL: -1.0}
B_EV, RHO = 0.2110, 0.317  # Tosi-Fumi b (0.338e-19 J) and ρ (Å)
SIGMA = {NA: 1.170, CL: 1.585}  # Å
C_PAIR = {(NA, NA): 1.25, (CL, CL): 0.75, (NA, CL): 1.0, (CL, NA): 1.0}
BM_ON, BM_CUT = 4.0, 5.0  # Å: the Born-Mayer switch
DENSITY = 0.016  # ion pairs per Å³ (molten NaCl, ~1.55 g/cm³)
KB = 8.617333262e-5  # eV/K


def born_mayer_table() -> torch.Tensor:
    """A_ij (eV) indexed by [Z_i, Z_j]."""
    table = torch.zeros((18, 18), dtype=torch.float64)
    for (a, b), c in C_PAIR.items():
        table[a, b] = c * B_EV * math.exp((SIGMA[a] + SIGMA[b]) / RHO)
    return table


class Reference:
    """Exact energy and forces of the point-charge + Born-Mayer salt (see the module docstring)."""

    def __init__(self, accuracy: float) -> None:
        self.coulomb = Coulomb(method="ewald", accuracy=accuracy)
        self.table = born_mayer_table()

    def __call__(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        pos = torch.tensor(atoms.positions, dtype=torch.float64, requires_grad=True)
        cell = torch.tensor(atoms.cell.array, dtype=torch.float64)
        z = torch.tensor(atoms.numbers)
        q = torch.tensor([CHARGE[int(n)] for n in atoms.numbers], dtype=torch.float64)
        graph = {
            keys.POSITIONS: pos,
            keys.CELL: cell[None],
            keys.PBC: torch.ones((1, 3), dtype=torch.bool),
            keys.BATCH: torch.zeros(len(atoms), dtype=torch.int64),
        }
        energy = self.coulomb(graph, q).sum()
        i, j, s = vesin.NeighborList(cutoff=BM_CUT, full_list=False).compute(
            atoms.positions, atoms.cell.array, True, quantities="ijS"
        )
        i, j = torch.as_tensor(i.astype(np.int64)), torch.as_tensor(j.astype(np.int64))
        r = torch.linalg.norm(pos[j] - pos[i] + torch.as_tensor(s, dtype=torch.float64) @ cell, dim=1)
        x = ((r - BM_ON) / (BM_CUT - BM_ON)).clamp(0.0, 1.0)
        switch = 1.0 - x**3 * (10.0 + x * (-15.0 + 6.0 * x))
        energy = energy + (self.table[z[i], z[j]] * torch.exp(-r / RHO) * switch).sum()
        (grad,) = torch.autograd.grad(energy, pos)
        return float(energy.detach()), -grad.numpy()


def random_salt(n_pairs: int, rng: np.random.Generator) -> Atoms:
    """n Na + n Cl placed at random in a cubic box at DENSITY ± 10 %, with minimum distances."""
    length = (n_pairs / (DENSITY * rng.uniform(0.9, 1.1))) ** (1.0 / 3.0)
    numbers = np.array([NA, CL] * n_pairs)
    for _ in range(1000):
        pos = np.zeros((0, 3))
        for z in numbers:
            for _ in range(5000):
                trial = rng.uniform(0.0, length, 3)
                d = pos - trial
                d -= length * np.round(d / length)
                r = np.linalg.norm(d, axis=1)
                like = numbers[: len(pos)] == z
                if np.all(r[like] >= 3.0) and np.all(r[~like] >= 2.3):
                    pos = np.vstack([pos, trial])
                    break
            else:
                break
        if len(pos) == len(numbers):
            return Atoms(numbers=numbers, positions=pos, cell=[length] * 3, pbc=True)
    raise RuntimeError(f"could not place {2 * n_pairs} ions")


def langevin(atoms: Atoms, reference: Reference, steps: int, dt_fs: float, temperature_K: float, rng) -> list:
    """BAOAB Langevin dynamics (friction 0.01/fs) with the reference potential; a snapshot every 10 steps."""
    masses = atoms.get_masses()[:, None]  # amu
    fs = 0.09822694788464065  # ASE time unit per fs: 1 fs = 0.0982 √(amu Å²/eV)
    dt = dt_fs * fs
    gamma = 0.01 / fs
    kt = KB * temperature_K
    v = rng.normal(size=atoms.positions.shape) * np.sqrt(kt / masses)
    _, f = reference(atoms)
    frames = []
    c1 = math.exp(-gamma * dt)
    for step in range(steps):
        v += 0.5 * dt * f / masses
        atoms.positions += 0.5 * dt * v
        v = c1 * v + math.sqrt(1 - c1**2) * np.sqrt(kt / masses) * rng.normal(size=v.shape)
        atoms.positions += 0.5 * dt * v
        _, f = reference(atoms)
        v += 0.5 * dt * f / masses
        if (step + 1) % 10 == 0:
            frames.append(atoms.copy())
    return frames


def make_frames(n_frames: int, seed: int, md_temperature_K: float) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    md_reference = Reference(accuracy=1e-6)
    frames = []
    for _ in range(n_frames // 2):
        atoms = random_salt(int(rng.integers(16, 33)), rng)
        atoms.info["config_type"] = "random"
        frames.append(atoms)
    n_md = n_frames - len(frames)
    per_run = 20
    while n_md > 0:
        start = random_salt(int(rng.integers(16, 33)), rng)
        # 300 steps of 2 fs to melt and forget the random start, then a snapshot every 10 steps (20)
        snaps = langevin(start, md_reference, 300 + 10 * per_run, 2.0, md_temperature_K, rng)[-per_run:]
        for atoms in snaps[:n_md]:
            atoms.info["config_type"] = "md"
            atoms.wrap()
            frames.append(atoms)
        n_md -= len(snaps)
    return frames


def label(frames: list[Atoms], accuracy: float) -> None:
    reference = Reference(accuracy)
    for atoms in frames:
        energy, forces = reference(atoms)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)


def config(
    name: str,
    out: Path,
    minutes: float,
    seed: int,
    coulomb: bool,
    sigma_energy: float | None,
    coulomb_options: dict | None = None,
    repulsion: bool = False,
) -> dict:
    model = {"type": "bpnn", "cutoff": 6.0, "n_radial": 12, "hidden": [64, 64]}
    if coulomb:
        model["longrange"] = {"coulomb": {"method": "ewald", "accuracy": 1e-5, **(coulomb_options or {})}}
        if repulsion:  # a ZBL wall under the short-range network (nearsight.longrange.repulsion)
            model["longrange"]["repulsion"] = {}
    return {
        "seed": seed,
        "dtype": "float64",
        "output_dir": str(out / name),
        "data": {"train": str(out / "train.xyz"), "test": str(out / "test.xyz"), "valid_fraction": 0.1},
        "model": model,
        "training": {
            "epochs": 100000,
            "batch_size": 4,
            "lr": 2e-3,
            "scheduler": "budget",
            "min_lr": 1e-5,
            "max_time_minutes": minutes,
            "time_limit_clock": "cpu",
            "early_stopping_patience": 100000,
            "loss": {"energy": {"sigma": sigma_energy}, "forces": {}},
            "log_every": 10,
        },
    }


def learned_charges(model_path: Path, frames: list[Atoms]) -> dict:
    from nearsight.data.neighbours import atoms_to_graph
    from nearsight.models.forcefield import ForceField
    from nearsight.models.io import load_model

    model = load_model(model_path, dtype=torch.float64)
    ff = ForceField(model).eval()
    q_all, z_all = [], []
    for atoms in frames:
        out = ff(atoms_to_graph(atoms, model.cutoff, torch.float64), forces=False)
        q_all.append(out[keys.CHARGES].detach().numpy())
        z_all.append(atoms.numbers)
    q, z = np.concatenate(q_all), np.concatenate(z_all)
    sign = 1.0 if q[z == NA].mean() >= 0 else -1.0
    q = sign * q
    stats = {"sign_flipped": sign < 0}
    for name, number in (("Na", NA), ("Cl", CL)):
        sel = q[z == number]
        stats[name] = {
            "mean": float(sel.mean()),
            "std": float(sel.std()),
            "max_abs_error": float(np.abs(sel - CHARGE[number]).max()),
        }
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=360)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--minutes", type=float, default=6.0, help="CPU minutes of training per model")
    parser.add_argument("--md-temperature-K", type=float, default=1500.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sigma-energy", type=float, default=0.5, help="eV (None: the data default, the energy spread)"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse train.xyz/test.xyz of --out")
    parser.add_argument(
        "--coulomb-options",
        type=yaml.safe_load,
        default=None,
        help="more model.longrange.coulomb keys (YAML), e.g. '{exclusion_radius: 5.0}'",
    )
    parser.add_argument(
        "--repulsion", action="store_true", help="the coulomb model gets a ZBL repulsion term"
    )
    parser.add_argument("--models", nargs="+", default=["short", "coulomb"])
    parser.add_argument("--out", default="/tmp/longrange_salt")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "longrange_salt.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from nearsight.training.config import validate_config
    from nearsight.training.trainer import Trainer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.reuse and (out / "train.xyz").is_file() and (out / "test.xyz").is_file():
        train, test = read(out / "train.xyz", index=":"), read(out / "test.xyz", index=":")
        frames = train + test
    else:
        frames = make_frames(args.frames, args.seed, args.md_temperature_K)
        label(frames, accuracy=1e-8)
        order = np.random.default_rng(args.seed + 1).permutation(len(frames))
        n_test = int(round(args.test_fraction * len(frames)))
        test = [frames[k] for k in order[:n_test]]
        train = [frames[k] for k in order[n_test:]]
        write(out / "train.xyz", train)
        write(out / "test.xyz", test)
    energies = np.array([a.get_potential_energy() / len(a) for a in frames])
    print(
        f"{len(frames)} frames ({len(train)} train, {len(test)} test) in {time.perf_counter() - t0:.0f} s; "
        f"energy per atom {energies.mean():.3f} ± {energies.std():.3f} eV",
        flush=True,
    )
    result = {
        "args": vars(args),
        "n_train": len(train),
        "n_test": len(test),
        "energy_per_atom_std_ev": float(energies.std()),
    }
    for name in args.models:
        cfg = validate_config(
            config(
                name,
                out,
                args.minutes,
                args.seed,
                name == "coulomb",
                args.sigma_energy,
                args.coulomb_options,
                args.repulsion,
            ),
            source=name,
        )
        best = Trainer(cfg).train()
        summary = json.loads((out / name / "training_summary.json").read_text())
        m = summary["test_metrics"]
        row = {
            "energy_rmse_mev_per_atom": 1e3 * m["energy_per_atom_rmse"],
            "energy_rmse_mev": 1e3 * m["energy_rmse"],
            "forces_rmse_mev_per_a": 1e3 * m["forces_rmse"],
            "steps": summary["steps"],
            "cpu_time_s": summary["wall_time_s"],
            "by_config_type": {
                k: {
                    "energy_rmse_mev_per_atom": 1e3 * v["energy_per_atom_rmse"],
                    "forces_rmse_mev_per_a": 1e3 * v["forces_rmse"],
                }
                for k, v in m.get("by_config_type", {}).items()
            },
        }
        if name == "coulomb":
            row["charges"] = learned_charges(best, test)
        result[name] = row
        print(name, json.dumps(row, indent=1), flush=True)
    if "short" in result and "coulomb" in result:
        ratio = result["coulomb"]["energy_rmse_mev_per_atom"] / result["short"]["energy_rmse_mev_per_atom"]
        result["energy_rmse_ratio"] = ratio
        ch = result["coulomb"]["charges"]
        ok_q = abs(ch["Na"]["mean"] - 1) <= 0.05 and abs(ch["Cl"]["mean"] + 1) <= 0.05
        print(f"\n{'model':<10}{'E meV/atom':>12}{'F meV/Å':>10}")
        for name in ("short", "coulomb"):
            print(
                f"{name:<10}{result[name]['energy_rmse_mev_per_atom']:>12.2f}{result[name]['forces_rmse_mev_per_a']:>10.1f}"
            )
        print(
            f"energy RMSE ratio long/short {ratio:.3f} (goal ≤ 0.2: {'met' if ratio <= 0.2 else 'NOT met'})"
        )
        print(
            f"charges: Na {ch['Na']['mean']:+.3f} ± {ch['Na']['std']:.3f}, Cl {ch['Cl']['mean']:+.3f} ± {ch['Cl']['std']:.3f} "
            f"(goal ±1 within 0.05: {'met' if ok_q else 'NOT met'})"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
