"""Fewest-switches surface hopping in the adiabatic representation, driven by an on-the-fly oracle.

:class:`AdiabaticSurfaceHopping` needs nothing but a function ``evaluate(q) -> (E, forces, d)`` of
one geometry q ``[D]``: the adiabatic energies E ``[n]`` (ascending), the forces on every state
F_i = −∇E_i ``[n, D]`` and the non-adiabatic coupling vectors d_ij = ⟨ψ_i|∇ψ_j⟩ ``[n, n, D]``
(antisymmetric), all in atomic units (Eh, bohr, electron masses, ħ = 1) -- what an ab initio code
gives at each step (:func:`oracle_evaluator` wraps a :class:`~nearsight.qm.oracles.Oracle`).  One
trajectory at a time; one evaluation per step.  A step of length Δt:

1. **Nuclei**: velocity Verlet on the active state a: p ← p + ½Δt F_a(q), q ← q + Δt p/m, evaluate
   at the new q, p ← p + ½Δt F_a(q).
2. **Phases of the states**: a quantum-chemistry code fixes the sign of each adiabatic state
   afresh at every geometry, so the raw couplings may flip sign between steps.  The states are
   made continuous by a sign vector s ``[n]`` (s_0 = +1): d_ij ← s_i s_j d_ij with the s that
   maximises Σ_{i<j} s_i s_j cos(d_ij^raw(t+Δt), d_ij^ref), where d_ij^ref is the last non-zero
   aligned d_ij (the previous step's, unless it vanished); for two states this is simply
   d_01(t+Δt)·d_01(t) ≥ 0.  One sign per state, so every pair of a state flips together, as the
   state's phase would.  The amplitudes refer to these aligned states, and every quantity below
   uses the aligned d.
3. **Electrons**: the adiabatic amplitudes b obey i ḃ = H b with H = diag(E) − i v·d (ħ = 1;
   v·d is real antisymmetric, so H is Hermitian).  Over the step E and v·d are interpolated
   linearly between the step's start and end, and b is propagated with ``substeps`` matrix
   exponentials exp(−i H(t_k) δ) at the sub-step midpoints t_k (δ = Δt/``substeps``; energies are
   measured from E_a at the step's start, a global phase).
4. **Hops** (Tully, J. Chem. Phys. 93, 1061 (1990)): the probability to switch from a to j is the
   population flux over the step, g_aj = Σ_k max(0, 2 Re(b_a* b_j)(v·d_aj) δ / |b_a|²) summed
   over the sub-steps; one uniform number per step picks at most one j.  The momentum is rescaled
   along d_aj to conserve the total energy; frustrated hops are kept or reversed
   (``frustrated``), exactly as in :class:`~nearsight.simulate.surface_hopping.SurfaceHopping`
   whose functions :func:`~nearsight.simulate.surface_hopping.hop_probabilities`,
   :func:`~nearsight.simulate.surface_hopping.pick_hops`,
   :func:`~nearsight.simulate.surface_hopping.rescale_momentum` and
   :func:`~nearsight.simulate.surface_hopping.decohere` are used here.
5. **Decoherence** (optional, ``decoherence=C`` in Eh, 0.1 in the original): Granucci & Persico,
   J. Chem. Phys. 126, 134114 (2007), at the step's end.

Each trajectory carries its own ``torch.Generator`` (``start(..., seed=)``), so its hops do not
depend on which trajectories ran before it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .surface_hopping import check_options, decohere, hop_probabilities, pick_hops, rescale_momentum

__all__ = [
    "AdiabaticSurfaceHopping",
    "EvaluationError",
    "Trajectory",
    "align_coupling_signs",
    "oracle_evaluator",
]

Evaluate = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
BOHR_A = 0.529177210903  # Å per bohr (CODATA 2018)
HARTREE_EV = 27.211386245988  # eV per Eh (CODATA 2018)
EXHAUSTIVE_STATES = 10  # sign vectors searched exhaustively up to this many states, greedily above


class EvaluationError(RuntimeError):
    """``evaluate`` failed (e.g. an unconverged ab initio label); the message names step and geometry."""


@dataclass
class Trajectory:
    """One trajectory: q, p ``[D]``, adiabatic amplitudes ``[n]`` (complex, in the sign-aligned
    states), the active state, time (a.u.), steps, hops and frustrated hops made, its generator,
    and E ``[n]``, forces ``[n, D]``, aligned couplings d ``[n, n, D]`` at q, the reference couplings
    of the sign alignment and the last sign vector applied ``[n]``."""

    q: torch.Tensor
    p: torch.Tensor
    amplitudes: torch.Tensor
    active: int
    generator: torch.Generator
    energies: torch.Tensor
    forces: torch.Tensor
    couplings: torch.Tensor
    reference: torch.Tensor
    signs: torch.Tensor
    time: float = 0.0
    steps: int = 0
    hops: int = 0
    frustrated: int = 0
    seed: int = 0
    history: list = field(default_factory=list)  # free for callers (e.g. per-step records)


def align_coupling_signs(d: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(signs ``[n]``, s_i s_j d_ij ``[n, n, D]``): the per-state signs (s_0 = +1) that maximise
    Σ_{i<j} s_i s_j cos(d_ij, reference_ij); a pair whose d or reference is zero does not count.
    Exhaustive over the 2^(n−1) sign vectors up to ``EXHAUSTIVE_STATES`` states, greedy above."""
    n = d.shape[0]

    def unit(x: torch.Tensor) -> torch.Tensor:  # underflow-safe direction (zero stays zero)
        scale = x.abs().amax(-1, keepdim=True)
        x = x / torch.where(scale > 0, scale, 1.0)
        norm = x.norm(dim=-1, keepdim=True)
        return x / torch.where(norm > 0, norm, 1.0)

    cos = (unit(d) * unit(reference)).sum(-1)  # [n, n]
    cos = torch.triu(cos, diagonal=1).numpy()
    if n <= EXHAUSTIVE_STATES:
        best, best_score = np.ones(n), -np.inf
        for rest in itertools.product((1.0, -1.0), repeat=n - 1):
            s = np.array((1.0, *rest))
            score = float(s @ cos @ s)
            if score > best_score + 1e-12:
                best, best_score = s, score
    else:
        best = np.ones(n)
        for j in range(1, n):
            best[j] = -1.0 if float(best[:j] @ cos[:j, j]) < 0 else 1.0
    signs = torch.as_tensor(best, dtype=d.dtype)
    return signs, d * (signs[:, None] * signs[None, :])[..., None]


class AdiabaticSurfaceHopping:
    """FSSH for ``evaluate(q) -> (E [n], forces [n, D], d [n, n, D])`` with ``masses`` ``[D]``
    (atomic units); see the module docstring."""

    def __init__(
        self,
        evaluate: Evaluate,
        masses: torch.Tensor,
        timestep: float,
        frustrated: str = "keep",
        decoherence: float | None = None,
        substeps: int = 20,
    ) -> None:
        check_options(frustrated, timestep, decoherence)
        if not (isinstance(substeps, int) and substeps > 0):
            raise ValueError(f"substeps = {substeps!r} must be a positive integer")
        self.evaluate = evaluate
        self.masses = torch.as_tensor(masses, dtype=torch.float64).reshape(-1)
        self.dt = float(timestep)
        self.frustrated = frustrated
        self.decoherence = decoherence
        self.substeps = substeps

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, q: torch.Tensor, step: int, time: float):
        try:
            E, F, d = self.evaluate(q)
        except Exception as exc:  # noqa: BLE001 - re-raised naming the step and geometry
            raise EvaluationError(
                f"evaluate failed at step {step} (t = {time:.3f} a.u.), q = {q.tolist()} bohr: {exc}"
            ) from exc
        E, F, d = (torch.as_tensor(x, dtype=torch.float64) for x in (E, F, d))
        n, D = E.shape[0], self.masses.numel()
        if F.shape != (n, D) or d.shape != (n, n, D):
            raise EvaluationError(
                f"evaluate at step {step}: shapes E {tuple(E.shape)}, forces {tuple(F.shape)}, "
                f"d {tuple(d.shape)}; expected [{n}], [{n}, {D}], [{n}, {n}, {D}]"
            )
        if not (torch.isfinite(E).all() and torch.isfinite(F).all() and torch.isfinite(d).all()):
            raise EvaluationError(f"evaluate at step {step}, q = {q.tolist()} bohr: non-finite output")
        return E, F, d

    def start(self, q: torch.Tensor, p: torch.Tensor, state: int = 0, seed: int = 0) -> Trajectory:
        """A trajectory at ``q``, ``p`` ``[D]`` entirely in adiabatic state ``state``; its hops drawn
        from a generator seeded with ``seed``."""
        q = torch.as_tensor(q, dtype=torch.float64).reshape(-1).clone()
        p = torch.as_tensor(p, dtype=torch.float64).reshape(-1).clone()
        if q.shape != self.masses.shape or p.shape != self.masses.shape:
            raise ValueError(
                f"q {tuple(q.shape)} and p {tuple(p.shape)} must match masses {tuple(self.masses.shape)}"
            )
        E, F, d = self._evaluate(q, 0, 0.0)
        n = E.shape[0]
        if not 0 <= state < n:
            raise ValueError(f"state = {state}: must be 0 .. {n - 1} (0 = lowest)")
        amplitudes = torch.zeros(n, dtype=torch.complex128)
        amplitudes[state] = 1.0
        return Trajectory(
            q, p, amplitudes, int(state), torch.Generator().manual_seed(int(seed)), E, F, d, d.clone(),
            torch.ones(n, dtype=torch.float64), seed=int(seed),
        )  # fmt: skip

    def total_energy(self, traj: Trajectory) -> float:
        """E_a + Σ p²/2m (Eh)."""
        return float(traj.energies[traj.active] + (traj.p**2 / (2 * self.masses)).sum())

    # ------------------------------------------------------------------ one step
    def step(self, traj: Trajectory) -> Trajectory:
        """One FSSH step (in place; returned for chaining)."""
        dt, m = self.dt, self.masses
        E0, d0 = traj.energies, traj.couplings
        v0 = traj.p / m
        p_half = traj.p + 0.5 * dt * traj.forces[traj.active]
        q = traj.q + dt * p_half / m
        E1, F1, d_raw = self._evaluate(q, traj.steps + 1, traj.time + dt)
        signs, d1 = align_coupling_signs(d_raw, traj.reference)
        nonzero = d1.abs().amax(-1, keepdim=True) > 0
        traj.reference = torch.where(nonzero, d1, traj.reference)
        traj.q, traj.p = q, p_half + 0.5 * dt * F1[traj.active]
        traj.energies, traj.forces, traj.couplings, traj.signs = E1, F1, d1, signs
        g = self._electrons(traj, E0, d0 @ v0, E1, d1 @ (traj.p / m))
        xi = torch.rand(1, generator=traj.generator, dtype=torch.float64)
        a = torch.tensor([traj.active])
        wants, target = pick_hops(g[None], xi, a)
        if bool(wants[0]):
            j = int(target[0])
            traj.p, hopped = rescale_momentum(
                traj.p, m, d1[traj.active, j], float(E1[j] - E1[traj.active]), self.frustrated
            )
            if hopped:
                traj.active, traj.hops = j, traj.hops + 1
            else:
                traj.frustrated += 1
        if self.decoherence is not None:
            kinetic = (traj.p**2 / (2 * m)).sum()[None]
            b = decohere(
                traj.amplitudes[None], E1[None], torch.tensor([traj.active]), kinetic, self.decoherence, dt
            )
            traj.amplitudes = b[0]
        traj.time += dt
        traj.steps += 1
        return traj

    def _electrons(
        self, traj: Trajectory, E0: torch.Tensor, vd0: torch.Tensor, E1: torch.Tensor, vd1: torch.Tensor
    ) -> torch.Tensor:
        """Propagate traj.amplitudes over the step under H(t) = diag(E) − i v·d, both interpolated
        linearly from (E0, vd0) to (E1, vd1) (``vd`` ``[n, n]``: v·d_ij); returns the hop
        probabilities g ``[n]`` from the active state accumulated over the sub-steps."""
        n_sub, delta = self.substeps, self.dt / self.substeps
        reference = E0[traj.active]
        w = ((torch.arange(n_sub, dtype=torch.float64) + 0.5) / n_sub)[:, None]  # sub-step midpoints
        E = (1 - w) * (E0 - reference) + w * (E1 - reference)  # [n_sub, n]
        vd = (1 - w[..., None]) * vd0 + w[..., None] * vd1  # [n_sub, n, n]
        H = torch.diag_embed(E).to(torch.complex128) - 1j * vd.to(torch.complex128)
        propagators = torch.linalg.matrix_exp(-1j * delta * H)  # [n_sub, n, n]
        b, path = traj.amplitudes, []
        for k in range(n_sub):
            b = propagators[k] @ b
            path.append(b)
        traj.amplitudes = b
        active = torch.full((n_sub,), traj.active, dtype=torch.long)
        return hop_probabilities(torch.stack(path), active, vd[:, traj.active], delta).sum(0)

    def run(
        self,
        traj: Trajectory,
        steps: int,
        until: Callable[[Trajectory], bool] | None = None,
        callback: Callable[[Trajectory], None] | None = None,
    ) -> Trajectory:
        """Up to ``steps`` steps, stopping early once ``until(traj)``; ``callback(traj)`` after each."""
        for _ in range(steps):
            if until is not None and until(traj):
                break
            self.step(traj)
            if callback is not None:
                callback(traj)
        return traj


def oracle_evaluator(oracle, atoms) -> Evaluate:
    """``evaluate(q)`` of an ab initio :class:`~nearsight.qm.oracles.Oracle` for the molecule ``atoms``
    (its species; q ``[3N]`` bohr are its flattened positions): E = ``state_energies`` (eV → Eh),
    F = ``state_forces`` (eV/Å → Eh/bohr) and d_ij = h_ij / (E_j − E_i) from ``state_couplings``
    h_ij (i < j; d_ji = −d_ij; 1/bohr).  A failed label raises :class:`EvaluationError` with the
    oracle's error, the call number and the geometry (Å); the driver adds the step."""
    from nearsight.keys import STATE_COUPLINGS, STATE_ENERGIES, STATE_FORCES

    template = atoms.copy()
    n_atoms = len(template)
    calls = [0]

    def evaluate(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        calls[0] += 1
        geometry = template.copy()
        geometry.positions = np.asarray(torch.as_tensor(q, dtype=torch.float64)).reshape(n_atoms, 3) * BOHR_A
        label = oracle(geometry)
        where = (
            f"oracle call {calls[0]} at {geometry.get_chemical_formula()} positions (Å) "
            f"{np.round(geometry.positions, 6).tolist()}"
        )
        if not label.ok:
            raise EvaluationError(f"{where}: the label failed: {label.error}")
        missing = [k for k in (STATE_ENERGIES, STATE_FORCES, STATE_COUPLINGS) if k not in label.extra]
        if missing:
            raise EvaluationError(f"{where}: the label lacks {missing} (an oracle with forces and couplings)")
        E = torch.as_tensor(label.extra[STATE_ENERGIES], dtype=torch.float64) / HARTREE_EV  # [S] Eh
        n = E.shape[0]
        to_au = BOHR_A / HARTREE_EV  # eV/Å -> Eh/bohr
        F = torch.as_tensor(label.extra[STATE_FORCES], dtype=torch.float64) * to_au  # [N, S, 3]
        F = F.permute(1, 0, 2).reshape(n, 3 * n_atoms)
        h = torch.as_tensor(label.extra[STATE_COUPLINGS], dtype=torch.float64) * to_au  # [N, P, 3]
        d = torch.zeros(n, n, 3 * n_atoms, dtype=torch.float64)
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        if h.shape[1] != len(pairs):
            raise EvaluationError(f"{where}: {h.shape[1]} coupling pairs for {n} states")
        for k, (i, j) in enumerate(pairs):
            gap = float(E[j] - E[i])
            if gap == 0:
                raise EvaluationError(f"{where}: states {i} and {j} are degenerate, d_ij is undefined")
            d[i, j] = h[:, k].reshape(-1) / gap
            d[j, i] = -d[i, j]
        return E, F, d

    return evaluate
