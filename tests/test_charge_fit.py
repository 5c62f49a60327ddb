"""Starting charges fitted to the energies (nearsight.longrange.charge_fit): the exact ion charges
of a synthetic salt come back from energies alone, for neutral and charged structures, with the
sign from labels or electronegativity; a training run starts its charge head there."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write

from nearsight import keys
from nearsight.data.neighbours import atoms_to_graph
from nearsight.longrange import Coulomb
from nearsight.longrange.charge_fit import fit_element_charges, mean_coulomb_per_atom
from nearsight.models.forcefield import ForceField
from nearsight.training.config import ConfigError, validate_config
from nearsight.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
NA, CL = 11, 17
CUTOFF = 4.0


def _repulsion(atoms: Atoms) -> float:
    """A Born-Mayer wall, 600 exp(−r/0.3) eV, switched off smoothly at 3.5 Å: inside the cutoff."""
    d = atoms.get_all_distances(mic=any(atoms.pbc))[np.triu_indices(len(atoms), 1)]
    switch = np.where(d < 3.5, 0.5 * (np.cos(np.pi * d / 3.5) + 1), 0.0)
    return float((600 * np.exp(-d / 0.3) * switch).sum())


def _salt(n: int, seed: int, extra: int = 0, periodic: bool = False) -> list[Atoms]:
    """n random arrangements of 4 + 4 ions (one more Na or Cl with ``extra`` = ±1) in a 10 Å box,
    ions ≥ 2.4 Å apart, with E = Coulomb(±1 point charges) + the repulsion."""
    rng = np.random.default_rng(seed)
    out = []
    coulomb = Coulomb(accuracy=1e-8)
    while len(out) < n:
        numbers = [NA] * 4 + [CL] * 4 + ([NA] if extra > 0 else [CL] if extra < 0 else [])
        atoms = Atoms(
            numbers, positions=rng.uniform(0, 10, (len(numbers), 3)), cell=[10, 10, 10], pbc=periodic
        )
        d = atoms.get_all_distances(mic=periodic)[np.triu_indices(len(atoms), 1)]
        if d.min() < 2.4:
            continue
        atoms.info["charge"] = float(extra)
        graph = atoms_to_graph(atoms, CUTOFF)
        q = torch.tensor([1.0 if z == NA else -1.0 for z in numbers], dtype=torch.float64)
        energy = float(coulomb(graph, q).sum()) + _repulsion(atoms)
        atoms.info["energy"] = energy - 3.0 * len(atoms)
        out.append(atoms)
    return out


def _graphs(frames: list[Atoms]) -> list[dict]:
    graphs = []
    for atoms in frames:
        graph = atoms_to_graph(atoms, CUTOFF)
        graph[keys.REF_ENERGY] = torch.tensor([atoms.info["energy"]], dtype=torch.float64)
        graphs.append(graph)
    return graphs


@pytest.mark.parametrize("periodic", [False, True], ids=["clusters", "periodic"])
def test_fit_recovers_the_ion_charges_from_energies_alone(periodic):
    graphs = _graphs(_salt(40, 0, periodic=periodic))
    fit = fit_element_charges(graphs, Coulomb(accuracy=1e-8), [NA, CL], CUTOFF)
    assert fit.sign_from == "electronegativity"  # neutral data: Cl, the more electronegative, negative
    assert fit.charges[NA] == pytest.approx(1.0, abs=0.02) and fit.charges[CL] == pytest.approx(
        -1.0, abs=0.02
    )
    assert fit.rmse < 0.05 * fit.rmse_zero  # the charges explain what the two-body term cannot
    assert fit.coulomb_per_atom == pytest.approx(
        mean_coulomb_per_atom(graphs, Coulomb(accuracy=1e-8), [NA, CL], fit.charges), rel=1e-10
    )


def test_fit_with_charged_structures_takes_the_sign_from_the_total_charge():
    frames = _salt(16, 1) + _salt(12, 2, extra=1) + _salt(12, 3, extra=-1)
    fit = fit_element_charges(_graphs(frames), Coulomb(accuracy=1e-8), [NA, CL], CUTOFF)
    assert fit.sign_from == "total charges"
    assert fit.charges[NA] == pytest.approx(1.0, abs=0.03) and fit.charges[CL] == pytest.approx(
        -1.0, abs=0.03
    )


def test_charge_labels_decide_the_sign_of_neutral_data():
    graphs = _graphs(_salt(30, 4))
    for g in graphs:  # labels that call Na the anion: the energies cannot tell, the labels do
        g[keys.label_key(keys.CHARGES)] = torch.where(g[keys.ATOMIC_NUMBERS] == NA, -0.8, 0.8).double()
    fit = fit_element_charges(graphs, Coulomb(accuracy=1e-8), [NA, CL], CUTOFF)
    assert fit.sign_from == "charge labels" and fit.charges[NA] == pytest.approx(-1.0, abs=0.02)


def _config(tmp_path, initial=None) -> dict:
    write(tmp_path / "train.xyz", _salt(30, 5))
    longrange = {"coulomb": {"accuracy": 1e-6}}
    if initial is not None:
        longrange["initial_charges"] = initial
    return validate_config({
        "seed": 0, "output_dir": str(tmp_path / "run"),
        "data": {"train": str(tmp_path / "train.xyz"), "valid_fraction": 0.2},
        "model": {"cutoff": CUTOFF, "n_radial": 4, "n_angular_eta": 1, "hidden": [8], "longrange": longrange},
        "training": {"epochs": 1, "batch_size": 4, "loss": {"energy": {}}},
    })  # fmt: skip


def test_training_run_starts_the_charge_head_at_the_fitted_charges(tmp_path):
    lines = []
    trainer = Trainer(_config(tmp_path), log=lines.append)
    trainer.setup()
    line = next(m for m in lines if m.startswith("initial charges fitted"))
    assert "sign from electronegativity" in line
    short = trainer.model.short
    bias = {z: float(short.charge_nets[k][-1].bias.detach()) for k, z in enumerate(short.species)}
    assert bias[NA] == pytest.approx(1.0, abs=0.03) and bias[CL] == pytest.approx(-bias[NA], abs=1e-9)
    # the energy shifts lost the mean Coulomb energy per atom: the fresh model is not offset by it
    graphs = trainer.train_graphs
    per_atom = mean_coulomb_per_atom(graphs, trainer.model.coulomb, short.species, bias)
    assert per_atom < -0.5
    assert f"{per_atom:.4g} eV/atom" in line


def test_given_and_zero_initial_charges(tmp_path):
    trainer = Trainer(_config(tmp_path, {"Na": 0.7, "Cl": -0.7}), log=lambda m: None)
    trainer.setup()
    nets = trainer.model.short.charge_nets
    assert [float(n[-1].bias.detach()) for n in nets] == [0.7, -0.7]
    zero = Trainer(_config(tmp_path, "zero"), log=lambda m: None)
    zero.setup()
    assert all(abs(float(n[-1].bias.detach())) < 0.5 for n in zero.model.short.charge_nets)  # PyTorch's init
    per_atom = mean_coulomb_per_atom(
        trainer.train_graphs, trainer.model.coulomb, [NA, CL], {NA: 0.7, CL: -0.7}
    )
    shift = trainer.model.short.energy_shift - zero.model.short.energy_shift
    np.testing.assert_allclose(shift.numpy(), per_atom * np.ones(2) * -1, rtol=1e-10)


def test_equivariant_charge_offsets_shift_the_charges_and_old_files_load():
    from nearsight.models.equivariant import EquivariantPotential
    from nearsight.models.io import model_from_dict, model_to_dict

    torch.manual_seed(0)
    model = EquivariantPotential([NA, CL], cutoff=CUTOFF, channels=4, l_max=1, sh_l_max=2, correlation=2,
                                 num_layers=2, radial_hidden=(8,), readout_hidden=4, charges=True).double()  # fmt: skip
    graph = atoms_to_graph(_salt(1, 6)[0], CUTOFF)

    def charges(m) -> torch.Tensor:  # noqa: ANN001
        return ForceField(m)(graph, forces=False)[keys.CHARGES].detach()

    before = charges(model)
    model.set_charge_offsets({NA: 1.0, CL: -1.0})
    after = charges(model)
    np.testing.assert_allclose(
        (after - before).numpy(), np.where(graph[keys.ATOMIC_NUMBERS] == NA, 1.0, -1.0)
    )
    data = model_to_dict(model)
    del data["state_dict"]["charge_offset"]  # a file written before the offsets existed
    np.testing.assert_allclose(charges(model_from_dict(data)).numpy(), before.numpy())


def test_a_fit_beyond_four_e_is_not_used(tmp_path, monkeypatch):
    import nearsight.longrange.charge_fit as charge_fit

    real = charge_fit.fit_element_charges

    def absurd(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        fit = real(*args, **kwargs)
        fit.charges = {NA: 7.0, CL: -7.0}
        return fit

    monkeypatch.setattr(charge_fit, "fit_element_charges", absurd)
    lines = []
    trainer = Trainer(_config(tmp_path), log=lines.append)
    trainer.setup()
    assert any("beyond ±4.0 e" in m for m in lines)
    assert all(abs(float(n[-1].bias.detach())) < 0.5 for n in trainer.model.short.charge_nets)


def test_initial_charges_config_errors():
    base = {"data": {"train": "x"}}
    with pytest.raises(ConfigError, match=r"initial_charges = 'guess': must be 'fit', 'zero' or a mapping"):
        validate_config({**base, "model": {"longrange": {"coulomb": {}, "initial_charges": "guess"}}})
    with pytest.raises(ConfigError, match=r"initial_charges\['Na'\] = 'one' must be a finite number"):
        validate_config({**base, "model": {"longrange": {"coulomb": {}, "initial_charges": {"Na": "one"}}}})
    with pytest.raises(ConfigError, match=r"only for head charges with a Coulomb term \(charges: qeq here\)"):
        validate_config(
            {**base, "model": {"longrange": {"coulomb": {}, "charges": "qeq", "initial_charges": "fit"}}}
        )
    cfg = validate_config({**base, "model": {"longrange": {"coulomb": {}}}})
    assert cfg["model"]["longrange"]["initial_charges"] == "fit"
