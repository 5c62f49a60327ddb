"""Adiabatic energies, forces and couplings from diabatic matrices (issue 18, item 2), on the
analytic models: Tully's three 1-D models and Ferretti's 2-D conical intersection at (3, 0).
Forces against central differences, d_ij against finite differences of eigenvector overlaps, and
finite values and derivatives (second order included) at the intersection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nearsight.nonadiabatic import adiabatic_energies, adiabatic_states, align_signs, derivative_couplings
from nearsight.nonadiabatic.analytic import FERRETTI, ferretti, tully


@pytest.fixture(autouse=True)
def _float64():
    """Atomic units need float64; the default is restored for the tests that follow."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _tully_at(x: float, model: int):
    positions = torch.tensor([[x, 0.0, 0.0]], requires_grad=True)
    return positions, tully(positions[:1, 0], model)  # V [1, 2, 2]


def _ferretti_at(X: float, Y: float, gamma=FERRETTI["gamma"]):
    positions = torch.tensor([[X, Y, 0.0]], requires_grad=True)
    return positions, ferretti(positions[:1, 0], positions[:1, 1], gamma)


CASES = [(1, -1.0), (1, 0.3), (2, -2.0), (2, 1.5), (3, -3.0), (3, 0.5), (3, 4.0)]


@pytest.mark.parametrize(("model", "x"), CASES)
def test_tully_energies_match_eigvalsh_and_forces_match_central_differences(model, x):
    positions, V = _tully_at(x, model)
    E = adiabatic_energies(V)
    np.testing.assert_allclose(E.detach().numpy(), np.linalg.eigvalsh(V.detach().numpy()), atol=1e-14)
    for i in range(2):
        (grad,) = torch.autograd.grad(E[0, i], positions, retain_graph=True)
        h = 1e-5
        plus = adiabatic_energies(_tully_at(x + h, model)[1])[0, i]
        minus = adiabatic_energies(_tully_at(x - h, model)[1])[0, i]
        assert float(grad[0, 0]) == pytest.approx(float(plus - minus) / (2 * h), abs=1e-6)


def _overlap_derivative(states_at, coordinate: float, i: int, j: int, h: float = 1e-5) -> float:
    """⟨u_i(q)| ∂u_j/∂q⟩ by central differences of overlaps, signs aligned with u at q."""
    U0 = states_at(coordinate)
    Up = align_signs(states_at(coordinate + h), U0)
    Um = align_signs(states_at(coordinate - h), U0)
    return float(U0[:, i] @ (Up[:, j] - Um[:, j])) / (2 * h)


@pytest.mark.parametrize(("model", "x"), CASES)
def test_tully_couplings_match_overlap_differences(model, x):
    positions, V = _tully_at(x, model)
    h, d = derivative_couplings(V, positions)

    def states_at(q: float) -> torch.Tensor:
        return adiabatic_states(_tully_at(q, model)[1].detach())[1][0]

    reference = _overlap_derivative(states_at, x, 0, 1)
    assert float(d[0, 0, 1, 0]) == pytest.approx(reference, abs=1e-5 * max(1.0, abs(reference)))
    assert float(d[0, 1, 0, 0]) == pytest.approx(-reference, abs=1e-5 * max(1.0, abs(reference)))
    E = adiabatic_energies(V)[0].detach()
    assert float(h[0, 0, 1, 0]) == pytest.approx(float(d[0, 0, 1, 0] * (E[1] - E[0])), rel=1e-12)


def test_ferretti_forces_and_couplings_along_both_directions():
    for X, Y in [(2.5, 0.3), (3.4, -0.2), (3.05, 0.05)]:
        positions, V = _ferretti_at(X, Y)
        h, d = derivative_couplings(V, positions)
        for axis, step in ((0, (1e-5, 0)), (1, (0, 1e-5))):
            for i in range(2):
                plus = adiabatic_energies(_ferretti_at(X + step[0], Y + step[1])[1])[0, i]
                minus = adiabatic_energies(_ferretti_at(X - step[0], Y - step[1])[1])[0, i]
                assert float(h[0, i, i, axis]) == pytest.approx(float(plus - minus) / 2e-5, abs=1e-6)

            def states_at(q: float, axis: int = axis, X: float = X, Y: float = Y) -> torch.Tensor:
                XY = [X, Y]
                XY[axis] = q
                return adiabatic_states(_ferretti_at(*XY)[1].detach())[1][0]

            reference = _overlap_derivative(states_at, [X, Y][axis], 0, 1, h=1e-6)
            assert float(d[0, 0, 1, axis]) == pytest.approx(reference, rel=1e-5, abs=1e-5)


def test_ferretti_intersection_is_at_3_0_with_the_published_slopes():
    def gap(X: float, Y: float) -> float:
        E = adiabatic_energies(_ferretti_at(X, Y)[1].detach(), epsilon=0.0)[0]
        return float(E[1] - E[0])

    assert gap(3.0, 0.0) == 0.0
    assert gap(3.1, 0.0) / 0.1 == pytest.approx(0.02, rel=1e-10)  # 0.020 Eh/bohr along X
    assert gap(3.0, 1e-4) / 1e-4 == pytest.approx(2 * FERRETTI["gamma"], rel=1e-6)  # 2γ along Y


def test_no_nan_at_the_intersection_to_second_order():
    """At (3, 0) exactly: energies, forces, h, d and the derivative of the forces with respect to a
    model parameter (what force training needs) are all finite."""
    gamma = torch.tensor(FERRETTI["gamma"], requires_grad=True)
    positions, V = _ferretti_at(3.0, 0.0, gamma)
    E = adiabatic_energies(V)
    assert float(E[0, 1] - E[0, 0]) == pytest.approx(2e-10)  # the cusp rounded over 2ε
    (forces,) = torch.autograd.grad(E[0].sum(), positions, create_graph=True)
    (second,) = torch.autograd.grad((forces**2).sum() + forces.sum(), gamma)
    assert torch.isfinite(forces).all() and torch.isfinite(second)
    positions, V = _ferretti_at(3.0, 0.0, gamma)
    h, d = derivative_couplings(V, positions, create_graph=True)
    assert torch.isfinite(h).all() and torch.isfinite(d).all()
    (dh,) = torch.autograd.grad((h[0, 0, 1] ** 2).sum(), gamma)
    assert torch.isfinite(dh)
    # exactly at the intersection the states are undefined and the rounded h is 0; a step away along
    # X, h_12 is the coupling gradient ∇V_12 = (0, γ) of the branching space and d_12 = h_12 / gap
    positions, V = _ferretti_at(3.0 + 1e-4, 0.0)  # gap 2e-6 Eh
    h, d = derivative_couplings(V, positions)
    np.testing.assert_allclose(h[0, 0, 1].abs().detach().numpy(), [0.0, FERRETTI["gamma"], 0.0], atol=1e-9)
    assert float(d[0, 0, 1].abs().max()) == pytest.approx(FERRETTI["gamma"] / 2e-6, rel=1e-6)


def _three_state(positions: torch.Tensor, degenerate: bool = False) -> torch.Tensor:
    x, y = positions[0, 0], positions[0, 1]
    a = torch.stack([x, 0.3 * y, 0.1 * x * y])
    V = torch.diag(torch.stack([x**2, 1.0 + y**2, 2.0 + x]))
    if degenerate:  # V_11 = V_22 and no coupling between them at the origin
        V = torch.diag(torch.stack([x**2 + y, x**2 - y, 2.0 + x]))
        a = torch.stack([x * y, 0.2 * x, 0.2 * y])
    off = torch.zeros((3, 3))
    off = off.index_put((torch.tensor([0, 1, 0]), torch.tensor([1, 2, 2])), a)
    return (V + off + off.T)[None]


def test_three_states_use_the_broadened_eigendecomposition():
    positions = torch.tensor([[0.4, -0.7, 0.0]], requires_grad=True)
    V = _three_state(positions)
    E = adiabatic_energies(V)
    np.testing.assert_allclose(E.detach().numpy(), torch.linalg.eigvalsh(V).detach().numpy(), atol=1e-13)
    h, d = derivative_couplings(V, positions)
    for i in range(3):
        step = torch.tensor([[1e-5, 0.0, 0.0]])
        fd = (adiabatic_energies(_three_state(positions + step))[0, i] - adiabatic_energies(_three_state(positions - step))[0, i]) / 2e-5  # fmt: skip
        assert float(h[0, i, i, 0]) == pytest.approx(float(fd), abs=1e-6)

    def states_at(q: float) -> torch.Tensor:
        return adiabatic_states(_three_state(torch.tensor([[q, -0.7, 0.0]])))[1][0]

    for i, j in [(0, 1), (0, 2), (1, 2)]:
        reference = _overlap_derivative(states_at, 0.4, i, j)
        assert float(d[0, i, j, 0]) == pytest.approx(reference, rel=1e-5, abs=1e-6)
    # a gradient through the eigenvectors equals torch's own away from degeneracy
    A = torch.tensor([[1.0, 0.2, 0.1], [0.2, 2.0, 0.3], [0.1, 0.3, 3.5]], requires_grad=True)
    ours = torch.autograd.grad(adiabatic_states(A)[1][:, 0].pow(3).sum(), A)[0]
    theirs = torch.autograd.grad(torch.linalg.eigh(0.5 * (A + A.T))[1][:, 0].pow(3).sum(), A)[0]
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-10)


def test_three_states_stay_finite_at_an_exact_degeneracy():
    positions = torch.zeros((1, 3), requires_grad=True)
    V = _three_state(positions, degenerate=True)
    E = adiabatic_energies(V)
    assert float(E[0, 1] - E[0, 0]) == 0.0
    (forces,) = torch.autograd.grad(E[0].sum() + E[0, 0], positions, create_graph=True)
    (hessian_row,) = torch.autograd.grad(forces[0, 1], positions)
    assert torch.isfinite(forces).all() and torch.isfinite(hessian_row).all()
    # torch's own eigvalsh has no finite second derivative here
    Vt = _three_state(positions, degenerate=True)
    (ft,) = torch.autograd.grad(torch.linalg.eigvalsh(Vt)[0, 0], positions, create_graph=True)
    (ht,) = torch.autograd.grad(ft[0, 1], positions)
    assert not torch.isfinite(ht).all()


def test_align_signs_flips_only_columns_that_turned_over():
    U = torch.eye(3)
    flipped = U * torch.tensor([1.0, -1.0, 1.0])
    np.testing.assert_array_equal(align_signs(flipped, U).numpy(), U.numpy())
    with pytest.raises(ValueError, match=r"shape \[..., n, n\]"):
        adiabatic_energies(torch.zeros(2, 3))
