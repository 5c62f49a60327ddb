"""NVE energy conservation of a long-range model (short range + Coulomb + D3), float64, 0.5 fs steps.

    # water: 192-atom box, untrained BPNN with a charge head + Ewald + D3(BJ, PBE)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/longrange_nve.py [--ps 10] [--method ewald] \
        [--d3-cutoff 12 --d3-cn-cutoff 10] [--json benchmarks/results/longrange_nve_water.json]
    # any model file and start structure, e.g. the trained salt model of longrange_salt.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/longrange_nve.py --model /tmp/longrange_salt/coulomb/best_model.pt \
        --start /tmp/longrange_salt/test.xyz --start-index 34 --temperature-K 1500 --ps 10 \
        --json benchmarks/results/longrange_nve_salt.json

Water model (``--model`` not given): the config-default BPNN (ACSF, r_c = 5 Å, hidden [64, 64])
with a charge head, ``model.longrange`` = {coulomb: {method, accuracy: 1e-6 eV/Å}, dispersion:
{functional: pbe, cutoff, cn_cutoff}}, random weights; its descriptor standardisation and ranges
are fitted on the first 20 frames of ``../shared/data/water/data_0`` so the network inputs are
O(1), and the last layer of each charge network is multiplied by ``--charge-scale`` so the
charges (and with them the Coulomb term) are not negligible.  The start is frame 0 of that set
(192 atoms, 12.445 Å cubic cell), velocities drawn at ``--temperature-K``.

The run goes through the ASE calculator (:class:`~nearsight.NearsightCalculator`, float64) and ASE's
velocity Verlet.  Recorded at every step: the total energy and each term (short range, Coulomb,
dispersion), Σq², and the Ewald/PME parameters the Coulomb term chose (a change of them between
steps, e.g. the number of reciprocal vectors ⌈L/λ⌉ per axis, is a discontinuity of the energy).
The drift is the slope of a least-squares line through E_tot(t), in eV/atom/ps (goal:
|drift| < 1e-5).  ``term_change_ev`` is the change of each term over the run (the terms exchange
energy with each other and with the kinetic energy: only the total is conserved).  Progress (all recorded series)
is written to ``--json`` every ``--save-every`` steps, so a killed run leaves its data.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.io import read
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from nearsight import NearsightCalculator

ROOT = Path(__file__).resolve().parents[1]
WATER = ROOT.parent / "shared" / "data" / "water" / "data_0"


def water_model(args: argparse.Namespace):
    """The untrained water model (see the module docstring) and its start structure."""
    from nearsight.data.neighbours import frame_to_graph
    from nearsight.data.readers import read_frames
    from nearsight.training.config import validate_config
    from nearsight.training.model_setup import build_model, fit_statistics

    torch.manual_seed(args.seed)
    longrange = {"coulomb": {"method": args.method, "accuracy": args.accuracy}}
    if args.d3:
        longrange["dispersion"] = {
            "functional": "pbe",
            "cutoff": args.d3_cutoff,
            "cn_cutoff": args.d3_cn_cutoff,
        }
    cfg = validate_config(
        {"data": {"train": "unused.xyz"}, "model": {"type": "bpnn", "longrange": longrange}}
    )
    model = build_model(cfg["model"], [1, 8]).double()
    frames = read_frames(WATER)[:20]
    graphs = [frame_to_graph(f, model.cutoff, torch.float64) for f in frames]
    fit_statistics(model, graphs, {1: 0.0, 8: 0.0}, energy_scale=args.energy_scale)
    with torch.no_grad():
        for net in model.short.charge_nets:
            last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.weight.mul_(args.charge_scale)
            last.bias.mul_(args.charge_scale)
    atoms = frames[0].to_atoms()
    atoms.calc = None
    return model, atoms


def ewald_signature(calc: NearsightCalculator, atoms) -> tuple | None:
    """(method, σ, λ or mesh spacing, reciprocal vectors or mesh points per axis) chosen this step."""
    coulomb = getattr(calc.forcefield.model, "coulomb", None)
    if coulomb is None or "charges" not in calc.results:
        return None
    q = torch.as_tensor(calc.results["charges"])
    cell = torch.as_tensor(atoms.cell.array)
    p = coulomb.ewald_parameters(q, cell)
    lengths = atoms.cell.lengths()
    step = p.lr_wavelength if p.method == "ewald" else p.mesh_spacing
    counts = tuple(int(math.ceil(length / step)) for length in lengths)
    return (p.method, round(p.smearing, 12), round(step, 12), counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model file (default: the untrained water model)")
    parser.add_argument("--start", default=None, help="start structure (with --model)")
    parser.add_argument("--start-index", type=int, default=0)
    parser.add_argument("--ps", type=float, default=10.0)
    parser.add_argument("--timestep-fs", type=float, default=0.5)
    parser.add_argument("--temperature-K", type=float, default=300.0)
    parser.add_argument("--method", default="ewald", choices=["ewald", "pme", "auto"])
    parser.add_argument("--accuracy", type=float, default=1e-6, help="Coulomb accuracy, eV/Å")
    parser.add_argument("--d3", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--d3-cutoff", type=float, default=12.0, help="Å (s-dftd3: 31.75)")
    parser.add_argument("--d3-cn-cutoff", type=float, default=10.0, help="Å (s-dftd3: 21.17)")
    parser.add_argument("--energy-scale", type=float, default=0.1, help="eV, water model's energy scale")
    parser.add_argument("--charge-scale", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "longrange_nve_water.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    if args.model is None:
        model, atoms = water_model(args)
        system = "water-untrained"
    else:
        from nearsight.longrange.model import LongRangePotential
        from nearsight.models.io import load_model

        model = load_model(args.model)
        # the same short-range model and charges; Coulomb at --accuracy and --method, D3 added
        coulomb = {**model.coulomb_config, "accuracy": args.accuracy, "method": args.method}
        d3 = model.dispersion_config
        if args.d3 and d3 is None:
            d3 = {"functional": "pbe", "cutoff": args.d3_cutoff, "cn_cutoff": args.d3_cn_cutoff}
        model = LongRangePotential(model.short, coulomb, d3 if args.d3 else None)
        atoms = read(args.start, index=args.start_index)
        atoms.calc = None
        system = Path(args.model).stem
    calc = NearsightCalculator(model, dtype="float64", on_extrapolation="ignore")
    atoms.calc = calc
    rng = np.random.default_rng(args.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature_K, rng=rng)
    Stationary(atoms)
    steps = int(round(args.ps * 1000 / args.timestep_fs))
    dyn = VelocityVerlet(atoms, timestep=args.timestep_fs * units.fs)
    n = len(atoms)
    series: dict[str, list] = {
        k: [] for k in ("t_ps", "etot", "epot", "short", "coulomb", "dispersion", "q2", "T")
    }
    signatures: dict[str, int] = {}
    changes: list[float] = []
    start = time.perf_counter()

    def summary(final: bool) -> dict:
        t = np.asarray(series["t_ps"])
        e = np.asarray(series["etot"])
        drift = float(np.polyfit(t, e, 1)[0] / n) if len(t) > 2 else float("nan")
        wall = time.perf_counter() - start
        out = {
            "system": system,
            "n_atoms": n,
            "args": vars(args),
            "finished": final,
            "steps_done": len(t) - 1,
            "time_ps": float(t[-1]) if len(t) else 0.0,
            "drift_ev_per_atom_ps": drift,
            "fluctuation_ev_per_atom": float(np.std(e) / n) if len(e) else float("nan"),
            "mean_temperature_K": float(np.mean(series["T"])) if series["T"] else float("nan"),
            "wall_s": wall,
            "s_per_step": wall / max(len(t) - 1, 1),
            "term_change_ev": {
                k: float(series[k][-1] - series[k][0])
                for k in ("short", "coulomb", "dispersion")
                if series[k]
            },
            "q2_range": [float(min(series["q2"])), float(max(series["q2"]))] if series["q2"] else None,
            "ewald_parameter_sets": signatures,
            "ewald_parameter_changes_at_ps": changes[:100],
            # every 10th sample (all of them are in memory; the file stays small)
            "series_every_10": {k: v[::10] for k, v in series.items()},
        }
        return out

    last_sig = None

    def record() -> None:
        nonlocal last_sig
        res = calc.results
        epot = atoms.get_potential_energy()
        series["t_ps"].append(dyn.get_time() / (1000 * units.fs))
        series["epot"].append(epot)
        series["etot"].append(epot + atoms.get_kinetic_energy())
        series["T"].append(atoms.get_temperature())
        series["short"].append(res.get("short_range_energy", epot))
        series["coulomb"].append(res.get("coulomb_energy", 0.0))
        series["dispersion"].append(res.get("dispersion_energy", 0.0))
        q = res.get("charges")
        series["q2"].append(float(np.sum(q**2)) if q is not None else 0.0)
        sig = ewald_signature(calc, atoms)
        if sig is not None:
            key = json.dumps(sig)
            signatures[key] = signatures.get(key, 0) + 1
            if last_sig is not None and sig != last_sig:
                changes.append(series["t_ps"][-1])
            last_sig = sig
        k = len(series["t_ps"]) - 1
        if k % args.save_every == 0 and args.json:
            Path(args.json).write_text(json.dumps(summary(False), indent=1))
            print(
                f"step {k:6d} t {series['t_ps'][-1]:.3f} ps T {series['T'][-1]:7.1f} K "
                f"Etot {series['etot'][-1]:.6f} eV Ecoul {series['coulomb'][-1]:.4f} "
                f"drift {summary(False)['drift_ev_per_atom_ps']:.2e} eV/atom/ps "
                f"{summary(False)['s_per_step']:.3f} s/step",
                flush=True,
            )

    dyn.attach(record, interval=1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    dyn.run(steps)
    result = summary(True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    ok = abs(result["drift_ev_per_atom_ps"]) < 1e-5
    print(
        f"{system}: {n} atoms, {result['steps_done']} steps ({result['time_ps']:.2f} ps), "
        f"{result['s_per_step']:.3f} s/step, T {result['mean_temperature_K']:.0f} K\n"
        f"drift {result['drift_ev_per_atom_ps']:.2e} eV/atom/ps ({'below' if ok else 'ABOVE'} the 1e-5 goal), "
        f"fluctuation {result['fluctuation_ev_per_atom']:.2e} eV/atom, "
        f"Ewald parameter sets {len(signatures)}, changes {len(changes)}, Σq² in {result['q2_range']}"
    )


if __name__ == "__main__":
    main()
