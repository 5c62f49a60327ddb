"""Fewest-switches surface hopping (nearsight.simulate.surface_hopping) on Tully's models: energy
conserved through hops, unitary electrons, frustrated hops kept or reversed, decoherence that
keeps the norm, and the branching of model 1 near the exact wavepacket result."""

from __future__ import annotations

import math

import pytest
import torch

from nearsight.nonadiabatic.analytic import tully
from nearsight.nonadiabatic.eigen import adiabatic_energies
from nearsight.simulate.surface_hopping import SurfaceHopping

pytestmark = pytest.mark.usefixtures("one_thread")
MASS = torch.tensor([2000.0])


def _fssh(model: int = 1, **kwargs) -> SurfaceHopping:
    return SurfaceHopping(
        lambda x: tully(x[:, 0], model), MASS, timestep=kwargs.pop("timestep", 2.0), **kwargs
    )


def _swarm(fssh: SurfaceHopping, n: int, k: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = -15.0 + 5.0 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    p = k + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return fssh.start(q, p)


def _total_energy(fssh: SurfaceHopping, swarm) -> torch.Tensor:
    E = adiabatic_energies(fssh.potential(swarm.q))
    return E.gather(1, swarm.active[:, None])[:, 0] + (swarm.p**2 / (2 * MASS)).sum(1)


def test_energy_is_conserved_through_hops_and_the_electrons_stay_normalised():
    fssh = _fssh(1, seed=1)
    swarm = _swarm(fssh, 20, 30.0)
    start = _total_energy(fssh, swarm)
    while not bool(((swarm.q[:, 0] > 15) | (swarm.q[:, 0] < -25)).all()):
        fssh.step(swarm)
    assert swarm.hops > 0
    assert float((_total_energy(fssh, swarm) - start).abs().max()) < 1e-5  # Verlet at 2 a.u.; hops exact
    assert float((swarm.amplitudes.abs().pow(2).sum(1) - 1).abs().max()) < 1e-10


def test_branching_of_model_1_is_near_the_exact_wavepacket_result():
    """k = 30: exact upper-state transmission 0.715 (benchmarks/tully_exact.py); 300 trajectories
    have a standard error of 0.026, so ±0.1 is a 4σ band (a fixed seed: the test is deterministic)."""
    fssh = _fssh(1, seed=0)
    swarm = _swarm(fssh, 300, 30.0)
    while not bool(((swarm.q[:, 0] > 15) | (swarm.q[:, 0] < -25)).all()):
        fssh.step(swarm)
    upper = float(((swarm.active == 1) & (swarm.q[:, 0] > 0)).double().mean())
    assert upper == pytest.approx(0.715, abs=0.1)
    assert fssh.populations(swarm).sum() == pytest.approx(1.0)


def test_frustrated_hops_are_kept_or_reversed():
    for mode in ("keep", "reverse"):
        fssh = _fssh(1, frustrated=mode)
        swarm = fssh.start(torch.tensor([[0.0]]), torch.tensor([[1.0]]))  # 2.5e-4 Eh kinetic, gap 0.01
        E = adiabatic_energies(fssh.potential(swarm.q))[0]
        fssh._rescale(swarm, 0, 0, 1, E, torch.tensor([1.0]))
        assert swarm.frustrated == 1 and int(swarm.active[0]) == 0
        assert float(swarm.p[0, 0]) == (1.0 if mode == "keep" else -1.0)
    # enough kinetic energy: the hop is made and the total energy kept
    swarm = fssh.start(torch.tensor([[0.0]]), torch.tensor([[20.0]]))
    before = _total_energy(fssh, swarm)
    fssh._rescale(swarm, 0, 0, 1, adiabatic_energies(fssh.potential(swarm.q))[0], torch.tensor([0.7]))
    assert int(swarm.active[0]) == 1 and float(swarm.p[0, 0]) > 0  # slowed down, not turned round
    assert float(_total_energy(fssh, swarm)) == pytest.approx(float(before), abs=1e-9)


def test_decoherence_damps_the_inactive_state_at_the_granucci_persico_rate():
    from nearsight.nonadiabatic.eigen import adiabatic_states

    fssh = _fssh(1, decoherence=0.1)
    swarm = fssh.start(torch.tensor([[0.2]]), torch.tensor([[10.0]]))
    E, U = adiabatic_states(fssh.potential(swarm.q))
    b = torch.tensor([[0.8, 0.6j]], dtype=torch.complex128)  # active 0 with 0.64, inactive 0.36
    swarm.amplitudes = torch.einsum("tab,tb->ta", U.to(torch.complex128), b)
    fssh._decohere(swarm)
    after = torch.einsum("tab,ta->tb", U.to(torch.complex128), swarm.amplitudes)
    kinetic = 100.0 / (2 * 2000.0)
    tau = (1 + 0.1 / kinetic) / float(E[0, 1] - E[0, 0])
    assert float(after[0, 1].abs() ** 2) == pytest.approx(0.36 * math.exp(-2 * 2.0 / tau), rel=1e-10)
    assert float(swarm.amplitudes.abs().pow(2).sum()) == pytest.approx(1.0, abs=1e-12)


def test_option_errors():
    with pytest.raises(ValueError, match="frustrated = 'bounce'"):
        _fssh(1, frustrated="bounce")
    with pytest.raises(ValueError, match="timestep = 0"):
        _fssh(1, timestep=0)
    with pytest.raises(ValueError, match="decoherence = -1"):
        _fssh(1, decoherence=-1)
