"""Adiabatic-representation FSSH driven by evaluate(q) -> (E, forces, d), as by an ab initio code
(nearsight.simulate.adiabatic_hopping): Tully's model 1 with the states' signs flipped at random at
every call, as a QM code may: the branching agrees with the exact result and with the diabatic
SurfaceHopping, energy is conserved, the trajectory does not depend on the flips; the sign
alignment of several states; the oracle wrapper's units and its errors."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from ase import Atoms

from nearsight.keys import STATE_COUPLINGS, STATE_ENERGIES, STATE_FORCES
from nearsight.nonadiabatic.analytic import tully
from nearsight.nonadiabatic.couplings import derivative_couplings
from nearsight.nonadiabatic.eigen import adiabatic_energies
from nearsight.qm.oracles import Label
from nearsight.simulate.adiabatic_hopping import (
    AdiabaticSurfaceHopping,
    EvaluationError,
    align_coupling_signs,
    oracle_evaluator,
)
from nearsight.simulate.surface_hopping import SurfaceHopping

pytestmark = pytest.mark.usefixtures("one_thread")
MASS = torch.tensor([2000.0], dtype=torch.float64)
EXACT_UPPER_K20 = 0.4928  # benchmarks/results/tully_exact_model1.json, k = 20


def _flip(d: torch.Tensor, rng: random.Random | None) -> torch.Tensor:
    """d_ij s_i s_j with random signs s (a QM code's arbitrary phases); rng None: no flips."""
    if rng is None:
        return d
    s = torch.tensor([rng.choice((1.0, -1.0)) for _ in range(d.shape[0])], dtype=torch.float64)
    return d * (s[:, None] * s[None, :])[..., None]


def library_evaluator(rng: random.Random | None):
    """Tully 1 through nearsight.nonadiabatic: E from eigen, forces and d from derivative_couplings."""

    def evaluate(q: torch.Tensor):
        x = q.detach().clone().reshape(1, 1).requires_grad_(True)
        V = tully(x[:, 0], 1)  # [1, 2, 2]
        h, d = derivative_couplings(V, x, torch.arange(1))  # [1, 2, 2, 1]
        E = adiabatic_energies(V.detach())[0]
        forces = -torch.diagonal(h[0], dim1=0, dim2=1).T.detach()  # [2, 1]
        return E, forces, _flip(d[0].detach(), rng)

    return evaluate


def closed_form_evaluator(rng: random.Random | None):
    """The same quantities in closed form (fast, for many trajectories): δ = V_11, c = V_12,
    g = √(δ² + c²), E = ∓g, −∇E = ±∇g, d_12 = (δ∇c − c∇δ)/(2g²)."""
    A, B, C, D = 0.01, 1.6, 0.005, 1.0

    def evaluate(q: torch.Tensor):
        x = float(q[0])
        e = math.exp(-B * abs(x))
        delta, ddelta = math.copysign(A * (1 - e), x), A * B * e
        c = C * math.exp(-D * x * x)
        dc = -2 * D * x * c
        g = math.sqrt(delta * delta + c * c)
        dg = (delta * ddelta + c * dc) / g
        d12 = (delta * dc - c * ddelta) / (2 * g * g)
        E = torch.tensor([-g, g], dtype=torch.float64)
        forces = torch.tensor([[dg], [-dg]], dtype=torch.float64)
        d = torch.tensor([[[0.0], [d12]], [[-d12], [0.0]]], dtype=torch.float64)
        return E, forces, _flip(d, rng)

    return evaluate


def test_the_closed_form_tully_1_is_that_of_the_library():
    library, closed = library_evaluator(None), closed_form_evaluator(None)
    for x in (-7.0, -1.3, -0.2, 0.01, 0.4, 2.5, 9.0):  # (at x = 0 autograd of sign|x| is 0)
        q = torch.tensor([x], dtype=torch.float64)
        for a, b in zip(library(q), closed(q), strict=True):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def _wigner(n: int, k0: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The Wigner distribution of the wavepacket x0 = −15, σ_x = 5, k0 (σ_p = 1/(2σ_x) = 0.1); then
    free flight to x = −8 where a trajectory starts before it (there |F| < 1e-7 Eh/bohr and
    |d| < 1e-27 /bohr, so this is the dynamics to 1e-7 and saves half of the steps)."""
    g = torch.Generator().manual_seed(seed)
    q = -15.0 + 5.0 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    p = k0 + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return torch.maximum(q, torch.tensor(-8.0, dtype=torch.float64)), p


def _outside(traj) -> bool:
    return abs(float(traj.q[0])) > 6.0 and float(traj.q[0] * traj.p[0]) > 0


def test_tully_1_upper_transmission_at_k20_with_random_state_signs_matches_exact_and_diabatic():
    """240 trajectories (standard error 0.032): within 4σ of the exact 0.493, and of the diabatic
    SurfaceHopping from the same initial conditions (the difference of two such estimates has
    σ ≈ 0.045).  Every call flips the states' signs at random; the driver's alignment undoes it."""
    n, k0 = 240, 20.0
    q, p = _wigner(n, k0, seed=0)
    fssh = AdiabaticSurfaceHopping(closed_form_evaluator(random.Random(1)), MASS, 10.0, substeps=10)
    upper, drift = 0, 0.0
    for i in range(n):
        traj = fssh.start(q[i], p[i], state=0, seed=i)
        e0 = fssh.total_energy(traj)
        fssh.run(traj, 1000, until=_outside)
        assert _outside(traj)
        drift = max(drift, abs(fssh.total_energy(traj) - e0))
        upper += traj.active == 1 and float(traj.q[0]) > 0
    adiabatic = upper / n
    assert adiabatic == pytest.approx(EXACT_UPPER_K20, abs=0.13)
    assert drift < 2e-4  # Δt = 10 a.u. Verlet, of a total energy of 0.09 Eh

    diabatic = SurfaceHopping(lambda x: tully(x[:, 0], 1), MASS, timestep=4.0, seed=0)
    swarm = diabatic.start(q, p)
    while not bool(((swarm.q[:, 0] > 6) | (swarm.q[:, 0] < -8.5)).all()):
        diabatic.step(swarm)
    reference = float(((swarm.active == 1) & (swarm.q[:, 0] > 0)).double().mean())
    assert reference == pytest.approx(EXACT_UPPER_K20, abs=0.13)
    assert adiabatic == pytest.approx(reference, abs=0.15)


def test_energy_is_conserved_through_hops_and_the_amplitudes_stay_normalised():
    fssh = AdiabaticSurfaceHopping(library_evaluator(random.Random(2)), MASS, 2.0, substeps=4)
    hops = 0
    for seed, (x, k) in enumerate([(-5.0, 30.0), (-4.0, 15.0), (-5.0, 12.0)]):
        traj = fssh.start(torch.tensor([x]), torch.tensor([k]), state=0, seed=seed)
        e0 = fssh.total_energy(traj)
        fssh.run(traj, 5000, until=_outside)
        hops += traj.hops
        assert (
            abs(fssh.total_energy(traj) - e0) < 1e-5
        )  # of 0.05-0.2 Eh, Verlet at 2 a.u. (V_11 has a kink in curvature at 0)
        assert float(traj.amplitudes.abs().pow(2).sum()) == pytest.approx(1.0, abs=1e-10)
    assert hops > 0


def test_the_trajectory_does_not_depend_on_the_signs_of_the_states():
    """Same seed, with and without random sign flips at every call: the same hops and path (to
    round-off), for model 1 with decoherence and reversal of frustrated hops."""
    runs = []
    for rng in (None, random.Random(3), random.Random(4)):
        fssh = AdiabaticSurfaceHopping(
            library_evaluator(rng), MASS, 5.0, frustrated="reverse", decoherence=0.1, substeps=5
        )
        states = []
        traj = fssh.start(torch.tensor([-4.0]), torch.tensor([12.0]), state=0, seed=7)
        fssh.run(traj, 400, callback=lambda t, s=states: s.append(t.active))
        runs.append((states, traj))
    (states, ref) = runs[0]
    assert 1 in states  # it did hop
    for other, traj in runs[1:]:
        assert other == states
        assert torch.allclose(traj.q, ref.q, atol=1e-9) and torch.allclose(traj.p, ref.p, atol=1e-9)
        assert torch.allclose(traj.amplitudes.abs(), ref.amplitudes.abs(), atol=1e-9)


def test_align_coupling_signs_recovers_the_phases_of_several_states():
    g = torch.Generator().manual_seed(0)
    n, D = 4, 6
    d = torch.randn(n, n, D, generator=g, dtype=torch.float64)
    d = d - d.transpose(0, 1)
    d[0, 3] = d[3, 0] = 0.0  # a vanishing pair does not count
    moved = d + 0.1 * torch.randn(n, n, D, generator=g, dtype=torch.float64)
    moved = 0.5 * (moved - moved.transpose(0, 1))
    s = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    flipped = moved * (s[:, None] * s[None, :])[..., None]
    signs, aligned = align_coupling_signs(flipped, d)
    assert signs.tolist() == s.tolist()
    assert torch.allclose(aligned, moved)
    assert ((aligned * d).sum(-1) >= 0).all()


class _FakeOracle:
    """Two states of a 2-atom molecule with known eV/Å labels; ``fail`` after ``ok_calls`` calls."""

    def __init__(self, ok_calls: int = 10**9) -> None:
        self.calls, self.ok_calls = 0, ok_calls

    def __call__(self, atoms: Atoms) -> Label:
        self.calls += 1
        if self.calls > self.ok_calls:
            return Label.failure("SA-CASSCF not converged in 100 macro iterations")
        r = float(atoms.get_distance(0, 1))
        forces = np.zeros((2, 2, 3))
        forces[:, 0, 0], forces[:, 1, 0] = [1.0, -1.0], [2.0, -2.0]
        h = np.zeros((2, 1, 3))
        h[:, 0, 0] = [0.5, -0.5]
        extra = {STATE_ENERGIES: np.array([r, r + 3.0]), STATE_FORCES: forces, STATE_COUPLINGS: h}
        return Label(r, forces[:, 0].copy(), True, extra=extra)


def test_oracle_evaluator_converts_units_and_names_the_step_of_a_failed_label():
    bohr, hartree = 0.529177210903, 27.211386245988
    atoms = Atoms("H2", positions=[[0, 0, 0], [1.0, 0, 0]])
    evaluate = oracle_evaluator(_FakeOracle(), atoms)
    q = torch.tensor(atoms.positions.reshape(-1) / bohr)
    E, F, d = evaluate(q)
    assert E.tolist() == pytest.approx([1.0 / hartree, 4.0 / hartree])
    assert F[1].tolist() == pytest.approx([2 * bohr / hartree, 0, 0, -2 * bohr / hartree, 0, 0])
    assert d[0, 1, 0] == pytest.approx(0.5 / 3.0 * bohr)  # h/(E_1 − E_0): eV/Å / eV -> 1/bohr
    assert torch.equal(d[1, 0], -d[0, 1]) and not d[0, 0].any()

    fssh = AdiabaticSurfaceHopping(oracle_evaluator(_FakeOracle(ok_calls=3), atoms), torch.ones(6), 1.0)
    traj = fssh.start(q, torch.zeros(6), state=1)
    fssh.step(traj)
    fssh.step(traj)
    with pytest.raises(EvaluationError, match=r"step 3 .*oracle call 4 at H2 positions .*not converged"):
        fssh.step(traj)


def test_option_errors():
    evaluate = closed_form_evaluator(None)
    with pytest.raises(ValueError, match="frustrated = 'bounce'"):
        AdiabaticSurfaceHopping(evaluate, MASS, 1.0, frustrated="bounce")
    with pytest.raises(ValueError, match="timestep = 0"):
        AdiabaticSurfaceHopping(evaluate, MASS, 0)
    with pytest.raises(ValueError, match="decoherence = -1"):
        AdiabaticSurfaceHopping(evaluate, MASS, 1.0, decoherence=-1)
    with pytest.raises(ValueError, match="state = 2"):
        AdiabaticSurfaceHopping(evaluate, MASS, 1.0).start(torch.tensor([0.0]), torch.tensor([1.0]), 2)
