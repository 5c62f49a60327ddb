"""CH2NH2+ surface hopping on the fly: FSSH from S1 driven directly by SA2-CASSCF(2,2)/6-31G.

Steps (one process, one thread; every result is cached, so a rerun continues where it stopped):

1. The S0 minimum: ASE BFGS (fmax ``--fmax`` eV/Å) on the oracle's ground-state forces from the
   planar methaniminium of ``ch2nh2_data.methaniminium``; written to
   ``benchmarks/data/ch2nh2_s0_min.xyz`` (atomically; reused if present).
2. The Hessian by central differences (±``--hessian-step`` Å per Cartesian coordinate) of the
   oracle's S0 gradients, symmetrised; mass-weighted normal modes with the translations and
   rotations projected out (:func:`nearsight.simulate.swarm_run.harmonic_modes` of the quadratic
   form ½ΔqᵀHΔq, whose finite-difference Hessian is H itself); stored in the results file.
3. Trajectory k (seed = ``--seed`` + k): q, p from the harmonic Wigner distribution at 0 K
   (:func:`~nearsight.simulate.swarm_run.wigner_sample`, a generator seeded with the seed),
   started on S1 (adiabatic index 1), Δt = 0.5 fs, ``--steps`` steps (200: 100 fs), Granucci-Persico
   decoherence 0.1 Eh, frustrated hops kept, with
   :class:`~nearsight.simulate.adiabatic_hopping.AdiabaticSurfaceHopping` and
   :func:`~nearsight.simulate.adiabatic_hopping.oracle_evaluator` (one full SA-CASSCF label with
   both states' gradients and h_01 per step, ~6 s; each CASSCF started from the previous step's
   orbitals and CI vectors, :class:`WarmStartOracle`, so that the states stay continuous).  Each finished trajectory is appended to
   ``benchmarks/results/ch2nh2_oracle_fssh.json`` (rewritten atomically): seed, active state at
   every step, the time of the first S1→S0 hop, total-energy drift, S1−S0 gaps, populations,
   hops, wall time.  Finished (or failed: a label that fails ends the trajectory, recorded with
   its error) seeds are skipped on a rerun.

Known limit: SA2-CASSCF(2,2) can still change solution between two steps of the hot ground-state
molecule after the decay (seed 0: −0.38 eV in one step at 91 fs, on S0) and even at the start
(seed 1: +0.49 eV at 1 fs on S1, the gap 8.6 -> 9.6 eV: the warm start left the lowest-E_SA
solution of the two cold starts); ``--summary`` prints each trajectory with its largest one-step
change of the total energy, which flags such steps.  A fix to try: solve from the warm and the cold
starts at each step and keep the solution whose E_SA is nearest E_SA(t) − Σ_I w_I F_I·Δq.

    OMP_NUM_THREADS=1 nohup .venv/bin/python benchmarks/ch2nh2_oracle_fssh.py --trajectories 4 \\
        > /tmp/ch2nh2_oracle_fssh.log 2>&1 &
    .venv/bin/python benchmarks/ch2nh2_oracle_fssh.py --summary

The results file records the settings (the oracle's included) and refuses a run with others;
``--results PATH`` keeps another set, e.g. the (π, π*)-first oracle of the current data set
(``results/ch2nh2_oracle_fssh_pi.json``), or a second process with its own ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read, write
from ase.optimize import BFGS

from nearsight._files import atomic_write
from nearsight.qm.casscf import SACASSCFOracle
from nearsight.qm.oracles import OracleError
from nearsight.simulate.adiabatic_hopping import (
    BOHR_A,
    HARTREE_EV,
    AdiabaticSurfaceHopping,
    EvaluationError,
    oracle_evaluator,
)
from nearsight.simulate.swarm_run import AU_TIME_FS, harmonic_modes, wigner_sample

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ch2nh2_data import methaniminium, oracle  # noqa: E402

MINIMUM = HERE / "data" / "ch2nh2_s0_min.xyz"
RESULTS = HERE / "results" / "ch2nh2_oracle_fssh.json"
AMU_ME = 1822.888486209  # electron masses per amu
AU_CM1 = 219474.6313632  # cm⁻¹ per Eh (angular frequency in a.u. -> wavenumber)


class WarmStartOracle(SACASSCFOracle):
    """The SA-CASSCF oracle started from the previous call's converged orbitals and CI vectors.

    From the RHF guess at every step, CASSCF can land on another solution (other active orbitals)
    between two neighbouring geometries, a jump of eV in the state energies; following the
    previous solution keeps the states continuous along a trajectory.  If the warm start fails,
    the cold one (RHF guess) is tried and counted in ``cold_restarts``.  ``reset()`` between
    trajectories."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.previous, self.cold_restarts = None, 0

    def reset(self) -> None:
        self.previous = None

    def casscf(self, atoms: Atoms, mo_coeff=None, ci0=None):
        if mo_coeff is None and self.previous is not None:
            try:
                mc = super().casscf(atoms, *self.previous)
            except OracleError:
                self.cold_restarts += 1
                mc = super().casscf(atoms)
        else:
            mc = super().casscf(atoms, mo_coeff, ci0)
        self.previous = (np.array(mc.mo_coeff), [np.array(c) for c in mc.ci])
        return mc


def warm_oracle() -> WarmStartOracle:
    return WarmStartOracle(**{k: v for k, v in oracle().settings().items() if k not in ("oracle", "method")})


class OracleCalculator(Calculator):
    """ASE calculator of an oracle's ground state (energy eV, forces eV/Å); a failed label raises."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, sa) -> None:
        super().__init__()
        self.sa, self.calls = sa, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        label = self.sa(self.atoms)
        if not label.ok:
            raise RuntimeError(
                f"oracle call {self.calls} failed at {self.atoms.positions.tolist()}: {label.error}"
            )
        self.results = {"energy": float(label.energy), "forces": np.asarray(label.forces)}


def optimise(sa, fmax: float) -> Atoms:
    if MINIMUM.is_file():
        print(f"S0 minimum from {MINIMUM}", flush=True)
        return read(MINIMUM)
    atoms = methaniminium()
    atoms.info.clear()
    atoms.calc = OracleCalculator(sa)
    start = time.perf_counter()
    BFGS(atoms, logfile="-").run(fmax=fmax, steps=200)
    energy, fmax_now = atoms.get_potential_energy(), float(np.abs(atoms.get_forces()).max())
    out = Atoms(atoms.symbols, atoms.positions)
    out.info.update(energy_eV=energy, fmax_eV_per_A=fmax_now, method=sa.name, state="S0")
    atomic_write(MINIMUM, lambda fh: write(fh, out, format="extxyz"))
    print(f"S0 minimum {energy:.6f} eV ({time.perf_counter() - start:.0f} s) -> {MINIMUM}", flush=True)
    return out


def hessian(sa, atoms: Atoms, step_A: float) -> np.ndarray:
    """[3N, 3N] Eh/bohr² by central differences of the oracle's S0 gradients."""
    x0 = atoms.positions.reshape(-1).copy()
    rows = []
    for k in range(x0.size):
        grads = []
        for sign in (1, -1):
            moved = Atoms(atoms.symbols, (x0 + sign * step_A * np.eye(x0.size)[k]).reshape(-1, 3))
            label = sa(moved)
            if not label.ok:
                raise RuntimeError(f"Hessian: oracle failed at coordinate {k}, sign {sign}: {label.error}")
            grads.append(-np.asarray(label.forces).reshape(-1))
        rows.append((grads[0] - grads[1]) / (2 * step_A))
        print(f"  Hessian row {k + 1}/{x0.size}", flush=True)
    H = np.array(rows) * BOHR_A**2 / HARTREE_EV  # eV/Å² -> Eh/bohr²
    return 0.5 * (H + H.T)


def load(path: Path, settings: dict) -> dict:
    if path.is_file():
        data = json.loads(path.read_text())
        changed = {
            k: (data["settings"].get(k), v) for k, v in settings.items() if data["settings"].get(k) != v
        }
        if changed:
            raise SystemExit(
                f"{path}: written with other settings {changed}; move it away or pass another --results"
            )
        return data
    return {"settings": settings, "setup": None, "trajectories": []}


def save(path: Path, data: dict) -> None:
    atomic_write(path, lambda fh: json.dump(data, fh, indent=1))


def run_trajectory(sa, atoms: Atoms, modes, q0, masses, seed: int, args) -> dict:
    generator = torch.Generator().manual_seed(seed)
    potential = None  # modes are given: wigner_sample does not evaluate the potential
    q, p = wigner_sample(potential, q0, masses, 1, 0.0, generator, modes=modes)
    fssh = AdiabaticSurfaceHopping(
        oracle_evaluator(sa, atoms),
        masses,
        args.timestep_fs / AU_TIME_FS,
        frustrated="keep",
        decoherence=args.decoherence,
        substeps=20,
    )
    start = time.perf_counter()
    sa.reset()  # the first geometry from the RHF guess, then each from the previous solution
    restarts = sa.cold_restarts
    record = {"seed": seed, "initial_state": 1, "ok": True, "error": None, "warm_start": True}
    try:
        traj = fssh.start(q[0], p[0], state=1, seed=seed)
    except EvaluationError as exc:
        return {**record, "ok": False, "error": str(exc), "wall_time_s": time.perf_counter() - start}
    e_start = fssh.total_energy(traj)
    rows = {
        "time_fs": [0.0],
        "active": [1],
        "gap_eV": [float(traj.energies[1] - traj.energies[0]) * HARTREE_EV],
    }
    rows["total_energy_Eh"] = [e_start]
    rows["population_1"] = [float(traj.amplitudes[1].abs() ** 2)]
    first_hop, hop_times = None, []

    def log(t) -> None:
        nonlocal first_hop
        time_fs = t.time * AU_TIME_FS
        if t.active != rows["active"][-1]:
            hop_times.append([time_fs, rows["active"][-1], t.active])
            if first_hop is None and rows["active"][-1] == 1 and t.active == 0:
                first_hop = time_fs
        rows["time_fs"].append(time_fs)
        rows["active"].append(int(t.active))
        rows["gap_eV"].append(float(t.energies[1] - t.energies[0]) * HARTREE_EV)
        rows["total_energy_Eh"].append(fssh.total_energy(t))
        rows["population_1"].append(float(t.amplitudes[1].abs() ** 2))
        if t.steps % 10 == 0:
            print(
                f"  seed {seed} step {t.steps} t {time_fs:.1f} fs: S{t.active}, gap {rows['gap_eV'][-1]:.3f} eV, "
                f"|b1|² {rows['population_1'][-1]:.3f}, ΔE {rows['total_energy_Eh'][-1] - e_start:+.2e} Eh, "
                f"{(time.perf_counter() - start) / t.steps:.1f} s/step",
                flush=True,
            )

    try:
        fssh.run(traj, args.steps, callback=log)
    except EvaluationError as exc:
        record.update(ok=False, error=str(exc))
    drift = np.array(rows["total_energy_Eh"]) - e_start
    record.update(
        steps=traj.steps,
        duration_fs=traj.time * AU_TIME_FS,
        first_hop_s1_s0_fs=first_hop,
        hops=traj.hops,
        frustrated=traj.frustrated,
        hop_events=hop_times,  # [time fs, from, to]
        final_state=int(traj.active),
        energy_drift_eV={
            "final": float(drift[-1]) * HARTREE_EV,
            "max_abs": float(np.abs(drift).max()) * HARTREE_EV,
        },
        min_gap_eV=float(min(rows["gap_eV"])),
        wall_time_s=time.perf_counter() - start,
        cold_restarts=sa.cold_restarts - restarts,
        **rows,
    )
    return record


def summary(path: Path) -> int:
    """One line per finished trajectory, with the largest one-step change of the total energy (a
    jump of a tenth of an eV or more marks a CASSCF solution that changed between two steps)."""
    data = json.loads(path.read_text())
    setup = data["setup"]
    freqs = setup["frequencies_cm1"]
    print(f"S0 minimum {setup['s0_min_energy_eV']:.6f} eV, frequencies {freqs[0]:.0f}-{freqs[-1]:.0f} cm⁻¹")
    for t in data["trajectories"]:
        if "total_energy_Eh" not in t:
            print(f"seed {t['seed']}: failed at the start: {t['error']}")
            continue
        jumps = np.abs(np.diff(t["total_energy_Eh"])) * HARTREE_EV
        k = int(np.argmax(jumps)) if jumps.size else 0
        print(
            f"seed {t['seed']}: ok {t['ok']}, {t['steps']} steps, first S1->S0 hop {t['first_hop_s1_s0_fs']} fs, "
            f"hops {[(round(h[0], 1), h[1], h[2]) for h in t['hop_events']]}, final S{t['final_state']}, "
            f"min gap {t['min_gap_eV']:.3f} eV, drift {t['energy_drift_eV']['final']:+.3f} eV "
            f"(max |{t['energy_drift_eV']['max_abs']:.3f}|), largest step change "
            f"{jumps[k] if jumps.size else 0:.3f} eV at {t['time_fs'][k + 1] if jumps.size else 0:.1f} fs, "
            f"{t['wall_time_s']:.0f} s"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--timestep-fs", type=float, default=0.5)
    parser.add_argument("--decoherence", type=float, default=0.1)
    parser.add_argument("--fmax", type=float, default=0.01)
    parser.add_argument("--hessian-step", type=float, default=0.005, help="Å")
    parser.add_argument("--summary", action="store_true", help="only summarise the results file")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file (JSON)")
    args = parser.parse_args(argv)
    if args.summary:
        return summary(args.results)
    sa = warm_oracle()
    settings = {
        "oracle": sa.settings(), "seed": args.seed, "steps": args.steps, "timestep_fs": args.timestep_fs,
        "decoherence_Eh": args.decoherence, "frustrated": "keep", "initial_state": 1, "temperature_K": 0.0,
        "substeps": 20, "fmax_eV_per_A": args.fmax, "hessian_step_A": args.hessian_step,
    }  # fmt: skip
    data = load(args.results, settings)
    ground = oracle()
    ground.couplings = False  # S0 forces suffice for the minimum and the Hessian
    atoms = optimise(ground, args.fmax)
    q0 = torch.tensor(atoms.positions.reshape(-1) / BOHR_A, dtype=torch.float64)
    masses = torch.tensor(np.repeat(atoms.get_masses(), 3) * AMU_ME, dtype=torch.float64)
    if data["setup"] is None:
        start = time.perf_counter()
        H = torch.tensor(hessian(ground, atoms, args.hessian_step), dtype=torch.float64)

        def quadratic(q: torch.Tensor) -> torch.Tensor:  # ½ΔqᵀHΔq as a 1×1 "diabatic" matrix
            dq = q - q0
            return (0.5 * (dq @ H) * dq).sum(-1)[:, None, None]

        omega, _ = harmonic_modes(quadratic, q0, masses)
        label = ground(Atoms(atoms.symbols, atoms.positions))
        data["setup"] = {
            "s0_min_energy_eV": float(label.energy),
            "s0_min_fmax_eV_per_A": float(np.abs(label.forces).max()),
            "positions_A": atoms.positions.tolist(),
            "symbols": atoms.get_chemical_symbols(),
            "hessian_Eh_per_bohr2": H.tolist(),
            "frequencies_cm1": (omega * AU_CM1).tolist(),
            "wall_time_s": time.perf_counter() - start,
        }
        save(args.results, data)
    setup = data["setup"]
    H = torch.tensor(setup["hessian_Eh_per_bohr2"], dtype=torch.float64)

    def quadratic(q: torch.Tensor) -> torch.Tensor:
        dq = q - q0
        return (0.5 * (dq @ H) * dq).sum(-1)[:, None, None]

    modes = harmonic_modes(quadratic, q0, masses)
    freqs = setup["frequencies_cm1"]
    print(
        f"S0 minimum {setup['s0_min_energy_eV']:.6f} eV; frequencies {freqs[0]:.0f}-{freqs[-1]:.0f} cm⁻¹",
        flush=True,
    )
    done = {t["seed"] for t in data["trajectories"]}
    for k in range(args.trajectories):
        seed = args.seed + k
        if seed in done:
            continue
        print(f"trajectory seed {seed}", flush=True)
        record = run_trajectory(sa, atoms, modes, q0, masses, seed, args)
        data["trajectories"].append(record)
        save(args.results, data)
        print(
            f"seed {seed}: ok {record['ok']}, {record.get('steps')} steps, first S1->S0 hop "
            f"{record.get('first_hop_s1_s0_fs')} fs, final S{record.get('final_state')}, drift "
            f"{record.get('energy_drift_eV')}, {record['wall_time_s']:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
