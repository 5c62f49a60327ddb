"""Learned potentials of generalised coordinates (nearsight.nonadiabatic.coordinate_model): trained on
adiabatic energies and gradients of Ferretti's model, a diabatic network has a genuine conical
intersection near (3, 0) while an adiabatic network of the same size rounds it off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from nearsight.nonadiabatic.analytic import ferretti
from nearsight.nonadiabatic.coordinate_model import (
    AdiabaticNetwork,
    DiabaticNetwork,
    energies_and_gradients,
    fit_adiabatic,
)
from nearsight.nonadiabatic.eigen import adiabatic_energies

pytestmark = pytest.mark.usefixtures("one_thread")


class _Exact(torch.nn.Module):
    def energies(self, q: torch.Tensor) -> torch.Tensor:
        return adiabatic_energies(ferretti(q[:, 0], q[:, 1]), epsilon=0.0)


def _smallest_gap(model) -> tuple[float, np.ndarray]:  # noqa: ANN001
    def gap(p: np.ndarray) -> float:
        with torch.no_grad():
            E = model.energies(torch.tensor(p[None], dtype=torch.float64))
        return float(E[0, 1] - E[0, 0])

    best = minimize(
        gap, x0=np.array([3.0, 0.0]), method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12}
    )
    return float(best.fun), best.x


def test_a_diabatic_network_learns_the_cusp_an_adiabatic_one_cannot():
    g = torch.Generator().manual_seed(0)
    q = torch.stack(
        [2 + 2.5 * torch.rand(300, generator=g), -1 + 2 * torch.rand(300, generator=g)], 1
    ).double()
    E, G = (x.detach() for x in energies_and_gradients(_Exact(), q))
    torch.manual_seed(0)  # the initial weights: the test does not depend on what ran before it
    diabatic, adiabatic = DiabaticNetwork(2), AdiabaticNetwork(2)
    for model in (diabatic, adiabatic):
        history = fit_adiabatic(model, q, E, G, steps=1000)
        assert history[-1] < 0.2 * history[0]
    gap, where = _smallest_gap(diabatic)
    assert gap < 1e-8 and np.linalg.norm(where - [3.0, 0.0]) < 0.1  # a true crossing (rounded by ε)
    assert _smallest_gap(adiabatic)[0] > 1e-4  # smooth energies: no crossing
    # the gradients are those of the energies (central differences)
    point = torch.tensor([[2.7, 0.3]], dtype=torch.float64)
    _, grad = energies_and_gradients(diabatic, point)
    step = torch.tensor([[1e-6, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        fd = (diabatic.energies(point + step) - diabatic.energies(point - step)) / 2e-6
    np.testing.assert_allclose(grad[0, :, 0].detach().numpy(), fd[0].numpy(), atol=1e-8)


def test_coupling_loss_ignores_the_sign_of_each_label_and_needs_a_diabatic_model():
    from nearsight.nonadiabatic.coordinate_model import couplings, sign_free_error

    torch.manual_seed(0)
    model = DiabaticNetwork(2, hidden=(8,))
    q = torch.tensor([[2.8, 0.2], [3.3, -0.4]], dtype=torch.float64)
    model.set_statistics(q, torch.tensor([[0.0, 0.01], [0.0, 0.02]], dtype=torch.float64))
    h = couplings(model, q).detach()  # [2, 2, 2, 2]
    assert torch.equal(h[:, 0, 1], h[:, 1, 0])  # h_ij = h_ji
    flipped = h * torch.tensor([1.0, -1.0], dtype=torch.float64)[:, None, None, None]  # second label's sign
    assert float(sign_free_error(h, flipped).max()) == 0.0
    assert float(sign_free_error(h, flipped + 0.1).max()) > 0.0
    E, G = (x.detach() for x in energies_and_gradients(_Exact(), q))
    with pytest.raises(ValueError, match="coupling labels need a DiabaticNetwork"):
        fit_adiabatic(AdiabaticNetwork(2), q, E, G, steps=1, coupling_labels=h)
