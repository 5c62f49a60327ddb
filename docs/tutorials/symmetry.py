# %% [markdown]
# # Symmetry analysis
#
# The energy of a molecule does not change when the molecule is translated, rotated, reflected,
# or when two atoms of the same element swap labels; the forces turn with the molecule
# (see [Symmetry](../concepts/symmetry.md)). nearsight's models have these symmetries by
# construction, and `nearsight.testing` measures them on any model: a model module, a model
# file, a `NearsightCalculator` or any ASE calculator.
#
# This tutorial
#
# 1. runs the symmetry checks on an (untrained) Behler-Parrinello model and an equivariant model;
# 2. shows by hand what "forces are equivariant" means: F(QR) = F(R) Qᵀ;
# 3. builds three models that break one symmetry each, and watches the checks catch them;
# 4. shows that forces which are not −∇E are caught too.
#
# No training is needed: the symmetries hold for any weights.

# %%
import os
from pathlib import Path

import numpy as np
import torch
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes

from nearsight import NearsightCalculator
from nearsight.testing import (
    check_forces,
    check_permutation,
    check_reflection,
    check_rotation,
    check_translation,
    format_report,
)
from nearsight.training.config import validate_config
from nearsight.training.trainer import build_model

OUT = Path(os.environ.get("NEARSIGHT_TUTORIAL_DIR", "outputs/tutorials/symmetry")).resolve()
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
rng = np.random.default_rng(0)
ethanol = molecule("CH3CH2OH")
species = sorted(set(ethanol.numbers))


def symmetry_checks(model, atoms):
    """The four symmetry checks of nearsight.testing on one structure."""
    return [
        check(model, atoms, rng=rng)
        for check in (check_rotation, check_reflection, check_translation, check_permutation)
    ]


# %% [markdown]
# ## 1. Models that have the symmetries
#
# A model sees only relative vectors r_ij = R_j − R_i of neighbours within the cutoff, turned
# into invariant descriptors (Behler-Parrinello) or equivariant features whose final readout is
# a scalar (equivariant model); per-atom energies are summed with weights shared per element.
# The errors below are relative deviations; the tolerance is 1e-10 (float64 round-off).

# %%
bpnn = build_model(validate_config({"data": {"train": "-"}, "model": {"hidden": [16]}})["model"], species)
equivariant = build_model(
    validate_config(
        {"data": {"train": "-"}, "model": {"type": "equivariant", "equivariant": {"preset": "small"}}}
    )["model"],
    species,
)
for name, model in (("Behler-Parrinello", bpnn.double()), ("equivariant", equivariant.double())):
    results = symmetry_checks(model, ethanol)
    print(name)
    print(format_report(results))
    assert all(r.passed for r in results)

# %% [markdown]
# ## 2. Equivariant forces, by hand
#
# Rotate the molecule by an orthogonal matrix Q (positions R → R Qᵀ, one row per atom): the
# energy stays, and the forces rotate with it, F(R Qᵀ) = F(R) Qᵀ. That follows from the
# invariance of E because F = −∂E/∂R, and it is exactly what `check_rotation` compares.

# %%
calc = NearsightCalculator(bpnn, dtype="float64")
q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # a random orthogonal matrix
rotated = ethanol.copy()
rotated.positions = ethanol.positions @ q.T
e0, f0 = calc.get_potential_energy(ethanol), calc.get_forces(ethanol).copy()
e1, f1 = calc.get_potential_energy(rotated), calc.get_forces(rotated).copy()
print(f"E = {e0:.10f} eV, E(rotated) = {e1:.10f} eV, det Q = {np.linalg.det(q):+.0f}")
print(f"max |F(R Qᵀ) − F(R) Qᵀ| = {np.abs(f1 - f0 @ q.T).max():.2e} eV/Å")
assert abs(e1 - e0) < 1e-9 and np.abs(f1 - f0 @ q.T).max() < 1e-9

# %% [markdown]
# ## 3. What breaks a symmetry
#
# Three toy energies, each an ASE calculator with forces from autograd (so the forces *are*
# −∇E, and only the symmetry is wrong). Each looks harmless:
#
# * **absolute positions**: a term in the atoms' Cartesian coordinates (as an input layer fed
#   x, y, z would give): breaks translation, rotation and reflection invariance;
# * **atom order**: a per-atom weight that depends on the atom's index instead of its element:
#   breaks permutation invariance;
# * **a handedness**: a sum of triple products (r_ij × r_ik)·r_il over all atoms is invariant
#   under rotations, translations and relabelling, but changes sign under a reflection (a
#   pseudoscalar): breaks reflection invariance only. (Diabatic couplings between states of different reflection symmetry really are
#   pseudoscalars; nearsight gives them a separate 0o readout, see
#   [Several electronic states](../concepts/nonadiabatic.md).)


# %%
class TorchEnergy(Calculator):
    """An ASE calculator for an energy function of the positions; forces = −∇E by autograd."""

    implemented_properties = ("energy", "forces")

    def __init__(self, energy_fn):
        super().__init__()
        self.energy_fn = energy_fn

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        r = torch.tensor(self.atoms.positions, dtype=torch.float64, requires_grad=True)
        energy = self.energy_fn(r, self.atoms.numbers)
        (grad,) = torch.autograd.grad(energy, r)
        self.results = {"energy": energy.item(), "forces": -grad.numpy()}


def pairs(r):
    """A smooth, symmetric baseline: Σ_{i<j} exp(−r_ij)."""
    d = torch.cdist(r, r)
    return torch.exp(-d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)]).sum()


def handedness(r):
    """Σ_ijkl a_ij b_ik c_il (r_ij × r_ik)·r_il over all atoms, with different decays a, b, c: a
    pseudoscalar that no relabelling of the atoms changes."""
    rel = r[None, :, :] - r[:, None, :]  # [n, n, 3]: r_ij = R_j − R_i
    d = torch.sqrt((rel**2).sum(-1) + 1e-12)
    a, b, c = torch.exp(-d), torch.exp(-2 * d), torch.exp(-3 * d)
    cross = torch.linalg.cross(rel[:, :, None, :], rel[:, None, :, :])  # [n, n, n, 3]
    return torch.einsum("ij,ik,il,ijkx,ilx->", a, b, c, cross, rel)


broken = {
    "absolute positions": lambda r, z: pairs(r) + 0.1 * torch.tanh(r).sum(),
    "atom order": lambda r, z: pairs(r) + 0.01 * (torch.arange(len(z)) * ((r - r.mean(0)) ** 2).sum(1)).sum(),
    "a handedness": lambda r, z: pairs(r) + 0.1 * handedness(r),
}
expected_failures = {
    "absolute positions": {"rotation", "reflection", "translation"},
    "atom order": {"permutation"},
    "a handedness": {"reflection"},
}
for name, energy_fn in broken.items():
    results = symmetry_checks(TorchEnergy(energy_fn), ethanol)
    failed = {r.name.split("[")[0] for r in results if not r.passed}
    print(f"--- {name}: fails {sorted(failed)}")
    print(format_report(results))
    assert failed == expected_failures[name], (name, failed)

# %% [markdown]
# Each check fails exactly where the energy depends on something it should not, and the
# detail column says whether the energy or only the forces moved.
#
# ## 4. Forces that are not −∇E
#
# Symmetric energies are not enough: the forces must be the gradient of the same energy, or MD
# does not conserve energy. nearsight takes forces from autograd in one place (`ForceField`),
# so they are. `check_forces` compares them with central finite differences of the energy; a
# calculator whose forces come from a separate (here slightly wrong) formula fails it.


# %%
class WrongForces(TorchEnergy):
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results["forces"] = 1.05 * self.results["forces"]  # 5 % too large


good = check_forces(TorchEnergy(lambda r, z: pairs(r)), ethanol, rng=rng)
bad = check_forces(WrongForces(lambda r, z: pairs(r)), ethanol, rng=rng)
print(format_report([good, bad]))
assert good.passed and not bad.passed
assert check_forces(bpnn.double(), ethanol, rng=rng).passed  # a nearsight model: exact −∇E
