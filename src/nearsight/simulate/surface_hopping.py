"""Tully's fewest-switches surface hopping (FSSH) on a diabatic potential, a swarm at once.

Each trajectory carries classical coordinates q ``[D]`` with masses m ``[D]``, electronic amplitudes
c in the diabatic basis and an active adiabatic state a.  One step of length Δt:

1. **Nuclei**: velocity Verlet on the active adiabatic surface E_a (forces −∇E_a by autograd, the
   diagonal of h from :func:`~nearsight.nonadiabatic.couplings.derivative_couplings`; one evaluation
   of the potential at each new geometry gives forces, couplings and states for steps 1, 3 and 5).
2. **Electrons**: the diabatic amplitudes evolve exactly under the diabatic Hamiltonian at the
   midpoint, c ← exp(−i V_d(q_mid) Δt) c (ħ = 1; V_d has no derivative couplings, so none appear).
3. **Hops** (Tully, J. Chem. Phys. 93, 1061 (1990)): with the adiabatic amplitudes b = Uᵀc and the
   derivative couplings d_aj at the new geometry, the probability to switch from a to j is
   g_aj = max(0, 2 Re(b_a* b_j) (v·d_aj) Δt / |b_a|²), the population flowing from a to j over the
   step (d_aj = ⟨a|∇j⟩; invariant under the sign of any
   eigenvector, since b_j and d_aj flip together); one uniform number per trajectory and step picks
   at most one j.
4. **Energy conservation at a hop**: the momentum is changed along d_aj, p ← p + γ d_aj, with the γ
   of smallest magnitude that keeps the total energy; where none exists (too little kinetic energy
   along d_aj) the hop is frustrated and rejected, and with ``frustrated="reverse"`` the momentum
   component along d_aj is reversed.
5. **Decoherence** (optional, ``decoherence=C`` in Eh, 0.1 in the original): the energy-based
   correction of Granucci & Persico (J. Chem. Phys. 126, 134114 (2007)) damps every inactive
   adiabatic amplitude by exp(−Δt/τ_ja), τ_ja = (1 + C/E_kin)/|E_j − E_a|, and renormalises the
   active one.

Units are those of the potential: atomic units (Eh, bohr, electron masses, ħ = 1) for the analytic
models of :mod:`nearsight.nonadiabatic.analytic`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..nonadiabatic.couplings import derivative_couplings
from ..nonadiabatic.eigen import DEFAULT_EPSILON, adiabatic_states

FRUSTRATED = ("keep", "reverse")


def check_options(frustrated: str, timestep: float, decoherence: float | None) -> None:
    """The options every surface-hopping driver shares, or a ValueError naming the bad one."""
    if frustrated not in FRUSTRATED:
        raise ValueError(f"frustrated = {frustrated!r}: must be one of {FRUSTRATED}")
    if not timestep > 0:
        raise ValueError(f"timestep = {timestep!r} must be positive")
    if decoherence is not None and not decoherence > 0:
        raise ValueError(f"decoherence = {decoherence!r} must be positive (Eh) or None")


@dataclass
class Swarm:
    """The state of a swarm of trajectories: coordinates and momenta ``[T, D]``, diabatic amplitudes
    ``[T, n]`` (complex), active adiabatic states ``[T]``, the time, the hops made and frustrated, and
    the forces of every state at q (None until the first step)."""

    q: torch.Tensor
    p: torch.Tensor
    amplitudes: torch.Tensor
    active: torch.Tensor
    time: float = 0.0
    hops: int = 0
    frustrated: int = 0
    forces: torch.Tensor | None = None  # [T, n, D] on every state at q, kept from the last step


class SurfaceHopping:
    """FSSH for ``potential(q) -> V_d`` (``[T, D]`` → ``[T, n, n]``) with ``masses`` ``[D]``."""

    def __init__(
        self,
        potential: Callable[[torch.Tensor], torch.Tensor],
        masses: torch.Tensor,
        timestep: float,
        frustrated: str = "keep",
        decoherence: float | None = None,
        epsilon: float = DEFAULT_EPSILON,
        seed: int = 0,
    ) -> None:
        check_options(frustrated, timestep, decoherence)
        self.potential = potential
        self.masses = torch.as_tensor(masses, dtype=torch.float64)
        self.dt = float(timestep)
        self.frustrated = frustrated
        self.decoherence = decoherence
        self.epsilon = epsilon
        self.generator = torch.Generator().manual_seed(seed)

    def start(self, q: torch.Tensor, p: torch.Tensor, state: int = 0) -> Swarm:
        """A swarm at ``q``, ``p`` ``[T, D]``, all in adiabatic state ``state``."""
        q, p = q.to(torch.float64), p.to(torch.float64)
        with torch.no_grad():
            _, U = adiabatic_states(self.potential(q), self.epsilon)
        amplitudes = U[:, :, state].to(torch.complex128)  # diabatic components of the adiabatic state
        active = torch.full((q.shape[0],), state, dtype=torch.long)
        return Swarm(q, p, amplitudes, active)

    def evaluate(self, q: torch.Tensor):
        """Everything a step needs at ``q`` from one evaluation of the potential: adiabatic energies
        E ``[T, n]``, states U ``[T, n, n]``, the forces on every state −∇E_i ``[T, n, D]`` (the
        diagonal of h) and the derivative couplings d ``[T, n, n, D]``."""
        q = q.detach().requires_grad_(True)
        V = self.potential(q)
        E, U = adiabatic_states(V.detach(), self.epsilon)
        h, d = derivative_couplings(V, q, torch.arange(q.shape[0]), self.epsilon)
        forces = -torch.diagonal(h, dim1=1, dim2=2).movedim(-1, 1)  # [T, n, D]
        return E, U, forces.detach(), d.detach()

    def step(self, swarm: Swarm) -> Swarm:
        """One FSSH step of the whole swarm (in place; returned for chaining)."""
        dt, m = self.dt, self.masses
        rows = torch.arange(swarm.q.shape[0])
        if swarm.forces is None:  # a new swarm; afterwards the forces of the step's end are kept
            swarm.forces = self.evaluate(swarm.q)[2]
        p_half = swarm.p + 0.5 * dt * swarm.forces[rows, swarm.active]
        q_mid = swarm.q + 0.5 * dt * p_half / m
        swarm.q = swarm.q + dt * p_half / m
        with torch.no_grad():  # electrons: exact propagation under V_d at the midpoint
            E_mid, U_mid = adiabatic_states(self.potential(q_mid), self.epsilon)
            phase = torch.exp(-1j * E_mid.to(torch.complex128) * dt)
            Uc = U_mid.to(torch.complex128)
            swarm.amplitudes = torch.einsum("tab,tb,tcb,tc->ta", Uc, phase, Uc, swarm.amplitudes)
        E, U, swarm.forces, d = self.evaluate(swarm.q)
        swarm.p = p_half + 0.5 * dt * swarm.forces[rows, swarm.active]
        self._hop(swarm, E, U, d)  # the next step starts with the forces of the (new) active state
        if self.decoherence is not None:
            self._decohere(swarm, E, U)
        swarm.time += dt
        return swarm

    def _hop(self, swarm: Swarm, E: torch.Tensor, U: torch.Tensor, d: torch.Tensor) -> None:
        T = E.shape[0]
        rows = torch.arange(T)
        b = torch.einsum("tab,ta->tb", U.to(torch.complex128), swarm.amplitudes)  # adiabatic amplitudes
        a = swarm.active
        velocity = swarm.p / self.masses
        flux = (d[rows, a] * velocity[:, None, :]).sum(-1)  # v·d_aj [T, n]
        g = hop_probabilities(b, a, flux, self.dt)
        xi = torch.rand(T, generator=self.generator, dtype=torch.float64)
        wants, target = pick_hops(g, xi, a)
        for t in torch.nonzero(wants).squeeze(1).tolist():
            self._rescale(swarm, t, int(a[t]), int(target[t]), E[t], d[t, int(a[t]), int(target[t])])

    def _rescale(
        self, swarm: Swarm, t: int, a: int, j: int, E: torch.Tensor, direction: torch.Tensor
    ) -> None:
        """Hop trajectory t from a to j if the momentum along ``direction`` can pay for it."""
        p, hopped = rescale_momentum(swarm.p[t], self.masses, direction, float(E[j] - E[a]), self.frustrated)
        swarm.p[t] = p
        if hopped:
            swarm.active[t] = j
            swarm.hops += 1
        else:
            swarm.frustrated += 1

    def _decohere(self, swarm: Swarm, E: torch.Tensor | None = None, U: torch.Tensor | None = None) -> None:
        """Damp the inactive adiabatic amplitudes (E, U at the swarm's geometry, computed if not given)."""
        if E is None or U is None:
            with torch.no_grad():
                E, U = adiabatic_states(self.potential(swarm.q), self.epsilon)
        Uc = U.to(torch.complex128)
        b = torch.einsum("tab,ta->tb", Uc, swarm.amplitudes)
        kinetic = (swarm.p**2 / (2 * self.masses)).sum(1)  # [T]
        b = decohere(b, E, swarm.active, kinetic, self.decoherence, self.dt)
        swarm.amplitudes = torch.einsum("tab,tb->ta", Uc, b)

    def populations(self, swarm: Swarm) -> torch.Tensor:
        """Fraction of the swarm in each adiabatic state ``[n]`` (the FSSH populations)."""
        n = swarm.amplitudes.shape[1]
        return torch.bincount(swarm.active, minlength=n).to(torch.float64) / swarm.active.shape[0]


# ----------------------------------------------------------------- pieces shared with adiabatic_hopping
def hop_probabilities(b: torch.Tensor, active: torch.Tensor, flux: torch.Tensor, dt: float) -> torch.Tensor:
    """Tully's switching probabilities g ``[T, n]`` from the active state a to every j over ``dt``:
    g_aj = max(0, 2 Re(b_a* b_j) (v·d_aj) Δt / |b_a|²), with adiabatic amplitudes b ``[T, n]``,
    ``active`` ``[T]`` and ``flux`` = v·d_aj ``[T, n]`` (g_aa = 0)."""
    rows = torch.arange(b.shape[0])
    coherence = (b[rows, active].conj()[:, None] * b).real  # Re(b_a* b_j) [T, n]
    population = (b[rows, active].abs() ** 2).clamp_min(1e-300)
    g = (2.0 * coherence * flux * dt / population[:, None]).clamp_min(0.0)
    g[rows, active] = 0.0
    return g


def pick_hops(g: torch.Tensor, xi: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(wants ``[T]`` bool, target ``[T]``): the first j whose cumulative probability Σ_{k≤j} g_ak
    exceeds the uniform number ξ ``[T]``; target = a where no hop is wanted."""
    hop = xi[:, None] < g.cumsum(1)
    wants = hop.any(1)
    return wants, torch.where(wants, hop.to(torch.int8).argmax(1), active)


def rescale_momentum(
    p: torch.Tensor, masses: torch.Tensor, direction: torch.Tensor, gap: float, frustrated: str = "keep"
) -> tuple[torch.Tensor, bool]:
    """(p′, hopped): p′ = p + γ·direction with the γ of smallest magnitude that pays the energy
    ``gap`` = E_j − E_a out of the kinetic energy Σ p²/2m; if none exists the hop is frustrated
    (hopped False): p is kept, or with ``frustrated="reverse"`` its component along ``direction``
    (in the kinetic metric) is reversed."""
    A = float((direction**2 / (2 * masses)).sum())
    B = float((p * direction / masses).sum())
    disc = B * B - 4 * A * gap
    if A <= 0 or disc < 0:
        if frustrated == "reverse" and A > 0:
            return p - 2 * B / (2 * A) * direction, False  # reverse the component along d
        return p, False
    root = disc**0.5
    gamma = (-B + root) / (2 * A) if B > 0 else (-B - root) / (2 * A)  # the root nearer 0
    return p + gamma * direction, True


def decohere(
    b: torch.Tensor, E: torch.Tensor, active: torch.Tensor, kinetic: torch.Tensor, C: float, dt: float
) -> torch.Tensor:
    """Granucci-Persico energy-based decoherence of adiabatic amplitudes b ``[T, n]``: every inactive
    b_j is damped by exp(−Δt/τ_ja), τ_ja = (1 + C/E_kin)/|E_j − E_a|, and the active one rescaled so
    that the norm stays 1 (E ``[T, n]``, ``kinetic`` ``[T]``, C in the units of E)."""
    rows = torch.arange(b.shape[0])
    gap = (E - E[rows, active][:, None]).abs().clamp_min(1e-300)
    tau = (1 + C / kinetic.clamp_min(1e-300))[:, None] / gap
    damp = torch.exp(-dt / tau)
    damp[rows, active] = 1.0
    b = b * damp
    rest = (b.abs() ** 2).sum(1) - b[rows, active].abs() ** 2
    active_population = (b[rows, active].abs() ** 2).clamp_min(1e-300)
    b[rows, active] = b[rows, active] * torch.sqrt((1 - rest).clamp_min(0.0) / active_population)
    return b
