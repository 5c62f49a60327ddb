"""A diabatic model in ASE (active state, every state's results under their own names) and as a
potential of atomic-unit coordinates for surface hopping (nearsight.nonadiabatic.molecule)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units

from nearsight.calculator import NearsightCalculator
from nearsight.descriptors.acsf import default_acsf_params
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.io import save_model
from nearsight.nonadiabatic.eigen import adiabatic_energies
from nearsight.nonadiabatic.molecule import MolecularDiabatic
from nearsight.simulate.surface_hopping import SurfaceHopping

pytestmark = pytest.mark.usefixtures("one_thread")
CUTOFF = 4.0


def _model(n_states: int = 2) -> BehlerParrinello:
    torch.manual_seed(1)
    descriptor = {"r_cut": CUTOFF, **default_acsf_params(CUTOFF, 4, None, 1, "ani", 4, 2)}
    model = BehlerParrinello([1, 6, 7], descriptor, [8], n_states=n_states).double()
    with torch.no_grad():  # energies of a few eV: the scale of a trained model
        model.energy_scale.fill_(0.3)
    return model


def _molecule() -> Atoms:
    positions = [
        [0, 0, 0],
        [1.3, 0, 0.05],
        [-0.55, 0.95, 0.1],
        [-0.55, -0.95, -0.1],
        [1.85, 0.9, 0.2],
        [1.85, -0.9, 0.3],
    ]
    return Atoms("CNHHHH", positions=positions)


def test_calculator_gives_the_active_state_and_every_state(tmp_path):
    path = save_model(_model(3), tmp_path / "model.pt")
    atoms = _molecule()
    atoms.calc = NearsightCalculator(path)
    energies = atoms.calc.get_property("state_energies", atoms)
    assert energies.shape == (3,) and np.all(np.diff(energies) > 0)
    assert atoms.get_potential_energy() == pytest.approx(energies[0], abs=1e-12)
    forces = atoms.get_forces()
    state_forces = atoms.calc.results["state_forces"]
    np.testing.assert_allclose(forces, state_forces[:, 0], atol=1e-12)
    h, d = atoms.calc.results["state_couplings"], atoms.calc.results["derivative_couplings"]
    assert h.shape == d.shape == (6, 3, 3)
    gaps = np.array([energies[1] - energies[0], energies[2] - energies[0], energies[2] - energies[1]])
    np.testing.assert_allclose(d * gaps[None, :, None], h, rtol=1e-10)
    np.testing.assert_allclose(np.linalg.eigvalsh(atoms.calc.results["diabatic_matrix"]), energies, atol=1e-8)
    assert "energies" not in atoms.calc.results  # ASE's per-atom energies: not defined for several states
    atoms.calc.set(state=2)  # the active state: a new calculation
    assert atoms.get_potential_energy() == pytest.approx(energies[2], abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), state_forces[:, 2], atol=1e-12)
    # forces of the selected state against central differences of its energy
    step = 1e-5
    probe = atoms.copy()
    probe.calc = NearsightCalculator(path, state=1)
    for atom, x in ((0, 0), (4, 2)):
        plus, minus = probe.copy(), probe.copy()
        plus.positions[atom, x] += step
        minus.positions[atom, x] -= step
        plus.calc = minus.calc = probe.calc
        e_plus = plus.get_potential_energy()
        e_minus = minus.get_potential_energy()
        assert -(e_plus - e_minus) / (2 * step) == pytest.approx(state_forces[atom, 1, x], abs=1e-6)
    with pytest.raises(ValueError, match=r"state = 3: must be an integer in \[0, 2\]"):
        NearsightCalculator(path, state=3)


def test_molecular_potential_in_atomic_units_and_surface_hopping_conserves_energy():
    model = _model(2)
    atoms = _molecule()
    potential = MolecularDiabatic(model, atoms)
    assert potential.masses.shape == (18,) and float(potential.masses[0]) == pytest.approx(
        12.011 * 1822.888, rel=1e-4
    )
    calc = NearsightCalculator(model)
    atoms.calc = calc
    atoms.get_potential_energy()
    V = potential(potential.q0[None])[0].detach()
    np.testing.assert_allclose(V.numpy() * units.Hartree, calc.results["diabatic_matrix"], atol=1e-10)
    # a short swarm on the learned surfaces: the total energy of each trajectory is conserved
    fssh = SurfaceHopping(potential, potential.masses, timestep=2.0, seed=0)
    generator = torch.Generator().manual_seed(0)
    p = torch.randn(4, 18, generator=generator, dtype=torch.float64) * (potential.masses * 1e-4).sqrt()
    swarm = fssh.start(potential.q0.expand(4, -1).clone(), p, state=1)

    def total(swarm) -> torch.Tensor:
        E = adiabatic_energies(potential(swarm.q).detach())
        return E[torch.arange(4), swarm.active] + (swarm.p**2 / (2 * potential.masses)).sum(-1)

    start = total(swarm)
    for _ in range(20):
        fssh.step(swarm)
    assert float((total(swarm) - start).abs().max()) < 2e-5  # Eh, over 40 a.u. of time
