"""Many FSSH trajectories in swarms, written to disk atomically and resumable bit for bit after a kill.

:func:`run_swarms` propagates N trajectories of a :class:`Problem` with
:class:`~nearsight.simulate.surface_hopping.SurfaceHopping`, B at a time.  Swarm s draws its initial
conditions and its hops from one generator seeded with ``seed + s``, so its trajectories do not depend
on how many swarms ran before it, or in which process.  ``output_dir`` receives

* ``populations.csv``: ``time_au, time_fs``, the fraction of trajectories active on each adiabatic
  state (``active_i``, the FSSH populations) and the mean electronic populations |b_i|² in the
  adiabatic basis (``electronic_i``), over the swarms finished so far (rewritten after each swarm);
* ``trajectories.csv``: each trajectory's final state, hops and, for few coordinates, its final q
  (and for a 1-D scattering model ``transmitted``/``reflected``: x > 0 or x < 0);
* ``checkpoint.pt`` (every ``checkpoint_every`` steps and after each swarm): the finished swarms'
  results and the running swarm's tensors, generator state and step, plain tensors and dicts for
  ``torch.load(weights_only=True)``; ``run_swarms(..., resume=True)`` continues from it exactly;
* ``summary.json`` once every swarm is done.

Everything is in atomic units (Eh, bohr, electron masses, ħ = 1); ``time_fs`` is for reading only.
Initial conditions: Gaussian wavepackets sampled from their Wigner distribution (Tully's models,
Ferretti's 2-D model) or, for molecules, :func:`wigner_sample` of the ground-state harmonic normal
modes (zero-point at 0 K).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._files import atomic_write
from ..nonadiabatic.eigen import adiabatic_energies, adiabatic_states
from ..progress import progress_bar
from .surface_hopping import SurfaceHopping, Swarm

AU_TIME_FS = 0.02418884326585747  # fs per atomic unit of time
KB_EH_PER_K = 3.166811563455546e-06  # Boltzmann constant, Eh/K
FERRETTI_MASSES = (20000.0, 6667.0)  # M_X, M_Y (electron masses), Ferretti et al. (1996)
FORMAT, FORMAT_VERSION = "nearsight-fssh-checkpoint", 1
RUN_FILES = ("checkpoint.pt", "populations.csv", "trajectories.csv", "summary.json")


@dataclass
class Problem:
    """A potential ``V_d = potential(q)`` (``[T, D]`` → ``[T, n, n]``), masses ``[D]``, a sampler of
    initial conditions ``sample(T, generator) -> (q, p)`` and a ``description`` of plain values that a
    resumed run must match; ``scattering``: a 1-D model whose outcome is the sign of x."""

    potential: Callable[[torch.Tensor], torch.Tensor]
    masses: torch.Tensor
    sample: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    n_states: int
    description: dict = field(default_factory=dict)
    scattering: bool = False


def wavepacket_sampler(q0, p0, sigma) -> Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """The Wigner distribution of a Gaussian wavepacket: q ~ N(q0, σ²), p ~ N(p0, 1/(4σ²)) per coordinate."""
    q0, p0, sigma = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in (q0, p0, sigma))

    def sample(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        q = q0 + sigma * torch.randn(n, q0.numel(), generator=generator, dtype=torch.float64)
        p = p0 + torch.randn(n, q0.numel(), generator=generator, dtype=torch.float64) / (2 * sigma)
        return q, p

    return sample


def tully_problem(model: int, x0: float, k0: float, sigma_x: float, mass: float = 2000.0) -> Problem:
    """Tully's model 1, 2 or 3 (mass 2000 a.u.), a wavepacket at ``x0`` with momentum ``k0`` and width ``sigma_x``."""
    from ..nonadiabatic.analytic import tully

    return Problem(
        lambda q: tully(q[:, 0], model),
        torch.tensor([float(mass)], dtype=torch.float64),
        wavepacket_sampler([x0], [k0], [sigma_x]),
        2,
        {"analytic": f"tully{model}", "x0": x0, "k0": k0, "sigma_x": sigma_x, "mass": mass},
        scattering=True,
    )


def ferretti_problem(q0, p0=(0.0, 0.0), sigma=None, masses=FERRETTI_MASSES) -> Problem:
    """Ferretti's 2-D conical intersection; a wavepacket at ``q0`` (X, Y bohr) with momenta ``p0``
    and widths ``sigma`` (default: the ground vibrational state of V_11, σ² = 1/(2√(k m)))."""
    from ..nonadiabatic.analytic import FERRETTI, ferretti

    if sigma is None:
        sigma = [(4 * k * m) ** -0.25 for k, m in zip((FERRETTI["kx"], FERRETTI["ky"]), masses, strict=True)]
    return Problem(
        lambda q: ferretti(q[:, 0], q[:, 1]),
        torch.tensor(masses, dtype=torch.float64),
        wavepacket_sampler(q0, p0, sigma),
        2,
        {
            "analytic": "ferretti",
            "q0": list(q0),
            "p0": list(p0),
            "sigma": list(sigma),
            "masses": list(masses),
        },
    )


def load_molecular(model_path: str, structure: str, index: int = 0):
    """:class:`nearsight.nonadiabatic.molecule.MolecularDiabatic` of a model file at frame ``index`` of
    ``structure`` (any file ASE reads); imported here so that the rest works without it."""
    from ase.io import read

    try:
        from ..nonadiabatic.molecule import MolecularDiabatic
    except ImportError as exc:
        raise ImportError(f"potential.model needs nearsight.nonadiabatic.molecule ({exc})") from exc
    try:
        atoms = read(structure, index=index)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise ValueError(f"{structure!r}: cannot read structure ({exc})") from exc
    return MolecularDiabatic(model_path, atoms)


def molecular_problem(potential, temperature_K: float = 0.0, description: dict | None = None) -> Problem:
    """A molecule: ``potential`` has ``masses`` ``[3N]``, ``q0`` ``[3N]`` and ``__call__``; initial
    conditions from :func:`wigner_sample` of its ground state at ``q0`` (the modes computed once)."""
    masses = torch.as_tensor(potential.masses, dtype=torch.float64)
    q0 = torch.as_tensor(potential.q0, dtype=torch.float64).reshape(-1)
    with torch.no_grad():
        n_states = int(potential(q0[None]).shape[-1])
    modes = harmonic_modes(potential, q0, masses)

    def sample(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return wigner_sample(potential, q0, masses, n, temperature_K, generator, modes=modes)

    description = {**(description or {}), "temperature_K": temperature_K}
    return Problem(potential, masses, sample, n_states, description)


def _rigid_basis(q0: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """Orthonormal mass-weighted translations and rotations ``[3N, 6]`` (5 for a linear molecule)."""
    r, sqrt_m = q0.reshape(-1, 3), masses.reshape(-1, 3)[:, 0].sqrt()
    r = r - (sqrt_m[:, None] ** 2 * r).sum(0) / (sqrt_m**2).sum()
    vectors = [(sqrt_m[:, None] * torch.eye(3, dtype=r.dtype)[k]).reshape(-1) for k in range(3)]
    vectors += [(sqrt_m[:, None] * torch.linalg.cross(torch.eye(3, dtype=r.dtype)[k].expand_as(r), r)).reshape(-1) for k in range(3)]  # fmt: skip
    u, s, _ = torch.linalg.svd(torch.stack(vectors, 1), full_matrices=False)
    return u[:, s > 1e-6 * s.max()]


def harmonic_modes(
    potential, q0: torch.Tensor, masses: torch.Tensor, remove_rigid: bool = True, step: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Angular frequencies ω ``[K]`` and mass-weighted orthonormal modes ``[D, K]`` of the lowest
    adiabatic state at ``q0``: the Hessian by central differences (``step`` bohr) of autograd
    gradients of E_0, M^(−½) H M^(−½) diagonalised in the space orthogonal to the rigid translations
    and rotations (``remove_rigid``: q0 are 3-D atom positions).  A mode with ω² ≤ 0 (not a
    minimum) raises ``ValueError``."""
    q0, masses = q0.to(torch.float64).reshape(-1), masses.to(torch.float64).reshape(-1)
    D = q0.numel()
    shift = step * torch.eye(D, dtype=torch.float64)
    q = torch.cat([q0 + shift, q0 - shift]).requires_grad_(True)  # [2D, D]
    gradient = torch.autograd.grad(adiabatic_energies(potential(q))[:, 0].sum(), q)[0].detach()
    hessian = (gradient[:D] - gradient[D:]) / (2 * step)
    weight = masses.rsqrt()
    F = weight[:, None] * 0.5 * (hessian + hessian.T) * weight[None, :]
    if remove_rigid:
        if D % 3:
            raise ValueError(f"remove_rigid needs 3-D atom positions, got {D} coordinates")
        rigid = _rigid_basis(q0, masses)
        basis = torch.linalg.svd(torch.eye(D, dtype=torch.float64) - rigid @ rigid.T)[0][
            :, : D - rigid.shape[1]
        ]
    else:
        basis = torch.eye(D, dtype=torch.float64)
    omega2, vectors = torch.linalg.eigh(basis.T @ F @ basis)
    if bool((omega2 <= 0).any()):
        bad = [f"{float(w):.3e}" for w in omega2[omega2 <= 0]]
        raise ValueError(f"the structure is not a minimum of the ground state: ω² = {bad} Eh/(bohr² m_e)")
    return omega2.sqrt(), basis @ vectors


def wigner_sample(
    potential,
    q0: torch.Tensor,
    masses: torch.Tensor,
    n: int,
    temperature_K: float = 0.0,
    generator: torch.Generator | None = None,
    *,
    remove_rigid: bool = True,
    modes: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q, p ``[n, D]`` from the harmonic Wigner distribution of the ground state at ``q0``.

    Per normal mode (ω, mass-weighted Q and P), W ∝ exp(−(ωQ² + P²/ω)/s) with s = coth(ω/(2k_BT))
    (1 at 0 K, ħ = 1): ⟨Q²⟩ = s/(2ω), ⟨P²⟩ = sω/2, so a coordinate of mass m has variance
    s/(2mω) and a mode's mean kinetic energy is sω/4.  q = q0 + M^(−½) L Q, p = M^(½) L P;
    ``modes`` = :func:`harmonic_modes` (computed if not given)."""
    q0, masses = q0.to(torch.float64).reshape(-1), masses.to(torch.float64).reshape(-1)
    omega, L = modes if modes is not None else harmonic_modes(potential, q0, masses, remove_rigid)
    s = torch.ones_like(omega)
    if temperature_K > 0:
        s = 1 / torch.tanh(omega / (2 * KB_EH_PER_K * temperature_K))
    Q = torch.randn(n, omega.numel(), generator=generator, dtype=torch.float64) * (s / (2 * omega)).sqrt()
    P = torch.randn(n, omega.numel(), generator=generator, dtype=torch.float64) * (s * omega / 2).sqrt()
    return q0 + (Q @ L.T) * masses.rsqrt(), (P @ L.T) * masses.sqrt()


@dataclass
class SwarmRunResult:
    """Populations at ``time_au`` ``[R]`` (``active`` and ``electronic``, ``[R, n]``) and each
    trajectory's final state, q ``[N, D]`` and number of hops; hops and frustrated hops in total."""

    time_au: torch.Tensor
    active: torch.Tensor
    electronic: torch.Tensor
    final_state: torch.Tensor
    final_q: torch.Tensor
    hops: torch.Tensor
    total_hops: int
    frustrated: int
    scattering: bool = False

    def outcomes(self) -> dict | None:
        """For a 1-D scattering model: the fraction transmitted (x > 0) and reflected per final state."""
        if not self.scattering:
            return None
        x, n = self.final_q[:, 0], self.active.shape[1]
        return {
            f"{side}_{i}": float(((self.final_state == i) & mask).double().mean())
            for side, mask in (("transmitted", x > 0), ("reflected", x <= 0))
            for i in range(n)
        }


def run_swarms(
    problem: Problem,
    output_dir: str | Path,
    *,
    trajectories: int,
    swarm_size: int,
    timestep_au: float,
    steps: int,
    state: int = 0,
    frustrated: str = "keep",
    decoherence: float | None = None,
    seed: int = 0,
    record_every: int = 1,
    checkpoint_every: int = 100,
    resume: bool = False,
    callback: Callable[[int, int], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SwarmRunResult:
    """Run (or with ``resume`` continue) ``trajectories`` FSSH trajectories in swarms of ``swarm_size``
    for ``steps`` steps of ``timestep_au``, starting on adiabatic state ``state`` (0 = lowest);
    populations are recorded every ``record_every`` steps.  ``callback(swarm, step)`` runs after
    every step (an exception there stops the run as a kill would)."""
    if not 0 <= state < problem.n_states:
        raise ValueError(f"initial.state = {state}: must be 0 .. {problem.n_states - 1} (0 = lowest)")
    for key, value in (("trajectories", trajectories), ("swarm_size", swarm_size), ("steps", steps),
                       ("record_every", record_every), ("checkpoint_every", checkpoint_every)):  # fmt: skip
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"{key} = {value!r}: must be a positive integer")
    settings = {
        "problem": problem.description, "trajectories": trajectories, "swarm_size": swarm_size,
        "timestep_au": float(timestep_au), "steps": steps, "state": state, "frustrated": frustrated,
        "decoherence": decoherence, "seed": seed, "record_every": record_every,
    }  # fmt: skip
    out, n = Path(output_dir), problem.n_states
    record_steps = sorted(set(range(0, steps + 1, record_every)) | {steps})
    rows = {k: r for r, k in enumerate(record_steps)}
    times = torch.tensor(record_steps, dtype=torch.float64) * float(timestep_au)
    zeros = torch.zeros(len(rows), n, dtype=torch.float64)
    ck = _load(out, settings) if resume else None
    if ck is None:
        ck = {"format": FORMAT, "format_version": FORMAT_VERSION, "settings": settings, "running": None}
        ck["done"] = {
            "swarms": 0, "active": zeros.clone(), "electronic": zeros.clone(),
            "final_state": torch.zeros(0, dtype=torch.long), "final_q": torch.zeros(0, problem.masses.numel(), dtype=torch.float64),
            "hops": torch.zeros(0, dtype=torch.long), "total_hops": 0, "frustrated": 0,
        }  # fmt: skip
    done = ck["done"]
    _write_tables(out, done, times, problem.scattering)
    n_swarms = math.ceil(trajectories / swarm_size)
    bar = progress_bar(
        total=n_swarms * steps, initial=done["swarms"] * steps, desc="surface hopping", unit="step"
    )
    progress = None if progress is None else bar.wrap(progress)  # the lines print above the bar
    with bar:
        for s in range(done["swarms"], n_swarms):
            size = min(swarm_size, trajectories - s * swarm_size)
            fssh = SurfaceHopping(
                problem.potential, problem.masses, timestep_au, frustrated, decoherence, seed=seed + s
            )
            run = ck["running"]
            if run is not None and run["swarm"] == s:
                swarm = Swarm(**{k: run[k] for k in ("q", "p", "amplitudes", "active", "time", "hops", "frustrated", "forces")})  # fmt: skip
                fssh.generator.set_state(run["generator"])
                k, rec_active, rec_electronic, traj_hops = run["step"], run["rec_active"], run["rec_electronic"], run["traj_hops"]  # fmt: skip
            else:
                q, p = problem.sample(size, fssh.generator)
                swarm, k = fssh.start(q, p, state), 0
                rec_active, rec_electronic, traj_hops = (
                    zeros.clone(),
                    zeros.clone(),
                    torch.zeros(size, dtype=torch.long),
                )
                _record(fssh, swarm, rec_active[0], rec_electronic[0])
            bar.set_postfix(swarm=f"{s + 1}/{n_swarms}", refresh=False)
            bar.update(k)  # the steps a resumed swarm had done
            while k < steps:
                before = swarm.active.clone()
                fssh.step(swarm)
                traj_hops += (swarm.active != before).long()
                k += 1
                bar.update()
                if k in rows:
                    _record(fssh, swarm, rec_active[rows[k]], rec_electronic[rows[k]])
                if k % checkpoint_every == 0 and k < steps:
                    ck["running"] = {
                        "swarm": s, "step": k, "q": swarm.q, "p": swarm.p, "amplitudes": swarm.amplitudes,
                        "active": swarm.active, "time": swarm.time, "hops": swarm.hops, "frustrated": swarm.frustrated,
                        "forces": swarm.forces, "generator": fssh.generator.get_state(), "rec_active": rec_active,
                        "rec_electronic": rec_electronic, "traj_hops": traj_hops,
                    }  # fmt: skip
                    _save(out, ck)
                if callback is not None:
                    callback(s, k)
            done.update(
                swarms=s + 1, active=done["active"] + rec_active, electronic=done["electronic"] + rec_electronic,
                final_state=torch.cat([done["final_state"], swarm.active]), final_q=torch.cat([done["final_q"], swarm.q]),
                hops=torch.cat([done["hops"], traj_hops]), total_hops=done["total_hops"] + swarm.hops,
                frustrated=done["frustrated"] + swarm.frustrated,
            )  # fmt: skip
            ck["running"] = None
            _save(out, ck)
            _write_tables(out, done, times, problem.scattering)
            if progress is not None:
                final = ", ".join(f"{float(v):.3f}" for v in done["active"][-1] / done["final_state"].numel())
                progress(f"swarm {s + 1}/{n_swarms} done ({done['final_state'].numel()} trajectories): active populations {final}")  # fmt: skip
    result = _result(done, times, problem.scattering)
    summary = {
        "settings": settings, "trajectories": int(result.final_state.numel()), "time_au": float(times[-1]),
        "active": result.active[-1].tolist(), "electronic": result.electronic[-1].tolist(),
        "hops": result.total_hops, "frustrated": result.frustrated, "outcomes": result.outcomes(),
    }  # fmt: skip
    atomic_write(out / "summary.json", lambda fh: json.dump(summary, fh, indent=1))
    return result


def _record(fssh: SurfaceHopping, swarm: Swarm, active: torch.Tensor, electronic: torch.Tensor) -> None:
    """Sums over the swarm into the rows ``active``/``electronic`` ``[n]``: trajectories on each state,
    and |b_i|² with b = Uᵀc the adiabatic amplitudes at q."""
    with torch.no_grad():
        _, U = adiabatic_states(fssh.potential(swarm.q), fssh.epsilon)
    b = torch.einsum("tab,ta->tb", U.to(torch.complex128), swarm.amplitudes)
    active += torch.bincount(swarm.active, minlength=active.numel()).to(torch.float64)
    electronic += (b.abs() ** 2).sum(0)


def _result(done: dict, times: torch.Tensor, scattering: bool) -> SwarmRunResult:
    count = max(done["final_state"].numel(), 1)
    return SwarmRunResult(
        times, done["active"] / count, done["electronic"] / count, done["final_state"], done["final_q"],
        done["hops"], done["total_hops"], done["frustrated"], scattering,
    )  # fmt: skip


def _write_tables(out: Path, done: dict, times: torch.Tensor, scattering: bool) -> None:
    if done["swarms"] == 0:
        return
    result = _result(done, times, scattering)
    n, D = result.active.shape[1], result.final_q.shape[1]
    header = (
        ["time_au", "time_fs"] + [f"active_{i}" for i in range(n)] + [f"electronic_{i}" for i in range(n)]
    )
    lines = [",".join(header)]
    for t, a, e in zip(times.tolist(), result.active.tolist(), result.electronic.tolist(), strict=True):
        lines.append(",".join(repr(float(v)) for v in [t, t * AU_TIME_FS, *a, *e]))
    atomic_write(out / "populations.csv", lambda fh: fh.write("\n".join(lines) + "\n"))
    coordinates = D <= 3
    header = ["trajectory", "final_state", "hops"] + ([f"q_{d}" for d in range(D)] if coordinates else [])
    lines = [",".join(header + (["outcome"] if scattering else []))]
    for i, (a, h, q) in enumerate(zip(result.final_state.tolist(), result.hops.tolist(), result.final_q.tolist(), strict=True)):  # fmt: skip
        row = [str(i), str(a), str(h)] + ([repr(v) for v in q] if coordinates else [])
        lines.append(",".join(row + ([("transmitted" if q[0] > 0 else "reflected")] if scattering else [])))
    atomic_write(out / "trajectories.csv", lambda fh: fh.write("\n".join(lines) + "\n"))


def _save(out: Path, ck: dict) -> None:
    atomic_write(out / "checkpoint.pt", lambda fh: torch.save(ck, fh), "wb")


def _load(out: Path, settings: dict) -> dict:
    path = out / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r} to resume from")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise ValueError(f"{str(path)!r}: cannot read the checkpoint ({exc})") from exc
    if not isinstance(ck, dict) or ck.get("format") != FORMAT or ck.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r}: not a nearsight surface-hopping checkpoint (version {FORMAT_VERSION})"
        )
    changed = [
        f"{k}: {ck['settings'].get(k)!r} -> {v!r}" for k, v in settings.items() if ck["settings"].get(k) != v
    ]
    if changed:
        raise ValueError(f"{str(path)!r}: the run was started with other settings ({'; '.join(changed)}): "
                         "resume with the same config, or --overwrite")  # fmt: skip
    return ck
