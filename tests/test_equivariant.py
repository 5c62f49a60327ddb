"""The E(3)-equivariant potential: equivariance of every internal feature, physics checks,
model files, dtypes and configuration errors.  Tiny models in float64 keep this fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from nearsight import keys
from nearsight.data.neighbours import atoms_to_graph
from nearsight.models.bpnn import UnknownElementError
from nearsight.models.equivariant import PRESETS, EquivariantPotential
from nearsight.models.forcefield import ForceField, edge_vectors
from nearsight.models.io import load_model, save_model
from nearsight.testing import format_report, run_all_checks
from structures import ethanol, water_box


@pytest.fixture(scope="module", autouse=True)
def _float64_one_thread():
    before = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # e3nn's Wigner D in float64 (its default dtype)
    yield
    torch.set_num_threads(before[0])
    torch.set_default_dtype(before[1])


def tiny(species, seed=0, **kw) -> EquivariantPotential:
    torch.manual_seed(seed)
    args = {"channels": 4, "l_max": 2, "sh_l_max": 3, "correlation": 3, "num_layers": 3, "parity": "both"}
    args.update(kw)
    args.update(radial_hidden=(8, 8), readout_hidden=4)
    model = EquivariantPotential(species, cutoff=4.0, **args).double()
    model.set_statistics({z: -0.5 * z for z in species}, 0.5, avg_num_neighbours=6.0)
    return model


def graph_of(atoms: Atoms, cutoff: float) -> dict:
    g = atoms_to_graph(atoms, cutoff, torch.float64)
    g[keys.EDGE_VECTORS] = edge_vectors(
        g[keys.POSITIONS], g[keys.CELL], g[keys.BATCH], g[keys.EDGE_INDEX], g[keys.CELL_SHIFTS]
    )
    return g


def wigner_d(name: str, Q: torch.Tensor) -> torch.Tensor:
    from e3nn import o3

    l, p = int(name[:-1]), 1 if name[-1] == "e" else -1
    return o3.Irrep(l, p).D_from_matrix(Q)  # includes the parity factor p^(det Q < 0)


@pytest.mark.parametrize("correlation,element_mix", [(3, False), (1, False), (3, True)])
def test_every_feature_rotates_and_reflects_by_wigner_d(correlation, element_mix):
    """f(Q x) = D(Q) f(x) for every A and h feature of every layer, Q proper and improper."""
    from e3nn import o3

    model = tiny([1, 6, 8], correlation=correlation, element_mix=element_mix)
    atoms = ethanol()
    atoms.positions -= atoms.positions.mean(0)
    base = model.intermediates(graph_of(atoms, model.cutoff))
    torch.manual_seed(1)
    R = o3.rand_matrix(dtype=torch.float64)
    seen = set()
    for Q in (R, -R, torch.diag(torch.tensor([1.0, 1.0, -1.0]))):
        moved = atoms.copy()
        moved.positions = atoms.positions @ Q.numpy().T
        rot = model.intermediates(graph_of(moved, model.cutoff))
        for layer, (f0, f1) in enumerate(zip(base, rot)):
            for name, x in f0.items():
                if name == "energy":
                    torch.testing.assert_close(f1[name], x, atol=1e-10, rtol=0)
                    continue
                D = wigner_d(name.split()[1], Q)
                expected = torch.einsum("nmc,km->nkc", x, D)  # features are [n, 2l+1, C]
                err = (f1[name] - expected).abs().max().item()
                assert err < 1e-10 * max(1.0, x.abs().max().item()), (layer, name, err)
                ir = name.split()[1]
                if (ir[-1] == "e") == (int(ir[:-1]) % 2 == 0):  # natural parity: never trivially zero
                    assert x.abs().max() > 1e-8, (layer, name)
                seen.add(name.split()[1])
    # features of both parities up to l = 3 were checked
    assert {"1o", "1e", "2e", "2o"} <= seen


def test_physics_checks_pass():
    model = tiny([1, 8, 14], channels=3, l_max=1, num_layers=2, sh_l_max=2)
    si = bulk("Si", "diamond", a=5.43, cubic=False)
    si.rattle(0.05, seed=0)
    water = water_box(2)
    results = run_all_checks(model, molecule=water[:6], periodic=[si], rng=0)
    assert all(r.passed for r in results), format_report(results, None)
    names = {r.name.split("[")[0] for r in results}
    assert {"rotation", "reflection", "forces_fd", "stress_fd", "smoothness", "supercell"} <= names


def test_model_file_roundtrip_float32_and_unknown_element(tmp_path):
    model = tiny([1, 8], channels=4, l_max=1, num_layers=2)
    atoms = water_box(2)
    path = save_model(model, tmp_path / "eq.pt", {"note": "test"})
    data = torch.load(path, weights_only=True)
    assert data["model_type"] == "equivariant" and data["cutoff"] == 4.0 and data["species"] == [1, 8]
    loaded = load_model(path)
    g = atoms_to_graph(atoms, model.cutoff, torch.float64)
    a, b = ForceField(model)(g), ForceField(loaded)(g)
    torch.testing.assert_close(a[keys.FORCES], b[keys.FORCES], atol=1e-12, rtol=0)
    f32 = load_model(path, dtype="float32")
    c = ForceField(f32)(atoms_to_graph(atoms, model.cutoff, torch.float32))
    assert c[keys.FORCES].dtype == torch.float32
    np.testing.assert_allclose(c[keys.FORCES].detach().numpy(), a[keys.FORCES].numpy(), atol=1e-4)
    with pytest.raises(UnknownElementError, match="Si"):
        model(graph_of(bulk("Si"), model.cutoff))


def test_element_mix_uses_each_atoms_own_matrix(tmp_path):
    """element_mix: A (first layer) and the residual (later layers) are mixed by W_{Z_i}."""
    from nearsight.models.interaction import mix as _mix

    torch.manual_seed(0)
    x, w = torch.randn(5, 3, 4), torch.randn(4, 3 * 2)
    element = torch.tensor([0, 2, 1, 2, 0])
    onehot = torch.nn.functional.one_hot(element, 3).double()
    expected = torch.stack([x[i] @ w.view(4, 3, 2)[:, int(element[i])] for i in range(5)])
    torch.testing.assert_close(_mix(x, w, onehot, True), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(_mix(x, w, onehot, False), x @ w, atol=0, rtol=0)

    model = tiny([1, 8], channels=4, l_max=1, num_layers=2, element_mix=True)
    assert model.layers[0].w_a.shape[-1] == 2 * 4 and model.layers[1].w_skip.shape[-1] == 2 * 4
    g = graph_of(water_box(2), model.cutoff)
    before = model(g)[keys.ATOMIC_ENERGIES]
    with torch.no_grad():  # the hydrogen block of the residual: changes the energies of H atoms only
        model.layers[1].w_skip.view(-1, 4, 2, 4)[:, :, 0] *= 2.0
    after = model(g)[keys.ATOMIC_ENERGIES]
    hydrogen = g[keys.ATOMIC_NUMBERS] == 1
    assert (after - before)[hydrogen].abs().min() > 1e-8
    torch.testing.assert_close(after[~hydrogen], before[~hydrogen], atol=1e-12, rtol=0)
    # stored in the model file; files written before the option load as element_mix False
    assert load_model(save_model(model, tmp_path / "mix.pt", {})).element_mix
    config = tiny([1, 8], channels=4, l_max=1, num_layers=2).get_config()
    del config["element_mix"]
    assert not EquivariantPotential.from_config(config).element_mix


def test_inference_keeps_no_graph_and_bad_arguments():
    model = tiny([1, 8], channels=4, l_max=1, num_layers=2)
    out = ForceField(model)(atoms_to_graph(water_box(2), model.cutoff, torch.float64))
    assert not out[keys.FORCES].requires_grad and out[keys.FORCES].grad_fn is None
    assert set(PRESETS) == {"small", "medium", "large"}
    with pytest.raises(ValueError, match="unknown equivariant preset 'huge'"):
        EquivariantPotential.from_preset("huge", [1])
    with pytest.raises(ValueError, match="l_max = 4 must be <= sh_l_max = 3"):
        EquivariantPotential([1], l_max=4)
    with pytest.raises(ValueError, match="parity = 'odd'"):
        EquivariantPotential([1], parity="odd")
    with pytest.raises(ValueError, match="correlation = 0"):
        EquivariantPotential([1], correlation=0)


def test_config_errors():
    from nearsight.training.config import ConfigError, validate_config

    base = {"data": {"train": "x.xyz"}}
    cfg = validate_config({**base, "model": {"type": "equivariant", "equivariant": {"preset": "small"}}})
    assert cfg["model"]["equivariant"] == {"preset": "small"}
    for spec, message in (
        ({"preset": "huge"}, r"model.equivariant: preset = 'huge': choose from"),
        ({"channel": 8}, r"model.equivariant: unknown key\(s\) \['channel'\]"),
        ({"correlation": "3"}, r"model.equivariant: correlation = '3': expected int"),
        ({"radial_hidden": [8, 0]}, r"radial_hidden = \[8, 0\]: must be a list of positive ints"),
    ):
        with pytest.raises(ConfigError, match=message):
            validate_config({**base, "model": {"type": "equivariant", "equivariant": spec}})
    with pytest.raises(ConfigError, match="model.equivariant is only read with model.type: equivariant"):
        validate_config({**base, "model": {"equivariant": {"preset": "small"}}})


def test_trainer_builds_fits_and_trains(tmp_path):
    from pathlib import Path

    from nearsight.training.config import validate_config
    from nearsight.training.trainer import Trainer

    train = Path(__file__).resolve().parents[1] / "examples" / "data" / "ethanol_train300.xyz"
    spec = {"preset": "small", "channels": 4, "radial_hidden": [8], "readout_hidden": 4, "correlation": 2}
    config = validate_config(
        {
            "dtype": "float64",
            "output_dir": str(tmp_path / "run"),
            "data": {"train": str(train), "max_train_frames": 12, "valid_fraction": 0.25},
            "model": {"type": "equivariant", "cutoff": 4.0, "equivariant": spec},
            "training": {"epochs": 3, "batch_size": 4, "lr": 0.01},
        }
    )
    best = Trainer(config).train()
    model = load_model(best)
    assert model.model_type == "equivariant" and model.channels == 4 and model.correlation == 2
    assert 5.0 < float(model.avg_num_neighbours) < 9.0  # ethanol within 4 Å: (almost) all 8 others
    assert float(model.energy_scale[0]) > 0 and model.energy_shift.abs().sum() > 0

    # fine-tuning (model.init_from) on "another level": every energy 0.3 eV per atom higher
    from ase.io import read, write

    frames = read(train, ":12")
    for atoms in frames:
        atoms.info["energy"] = atoms.get_potential_energy() + 0.3 * len(atoms)
        atoms.arrays["forces"] = atoms.get_forces()
        atoms.calc = None
    write(tmp_path / "shifted.xyz", frames)
    tuned_cfg = validate_config(
        {
            **{k: config[k] for k in ("dtype", "training")},
            "output_dir": str(tmp_path / "tuned"),
            "data": {"train": str(tmp_path / "shifted.xyz"), "valid_fraction": 0.25},
            "model": {"type": "equivariant", "cutoff": 4.0, "equivariant": spec, "init_from": str(best)},
        }
    )
    trainer = Trainer(tuned_cfg, log=lambda m: None)
    trainer.setup()  # the starting point: the file's weights, the shift refitted to the new labels
    assert all(torch.equal(p0, p1) for p0, p1 in zip(model.parameters(), trainer.model.parameters()))
    shift = trainer.model.energy_shift - model.energy_shift  # per element H, C, O
    assert float(shift @ torch.tensor([6.0, 2.0, 1.0], dtype=shift.dtype)) == pytest.approx(2.7, abs=0.05)
    tuned = load_model(Trainer(tuned_cfg, log=lambda m: None).train())
    assert not all(torch.equal(p0, p1) for p0, p1 in zip(model.parameters(), tuned.parameters()))


def test_torchscript_export_matches(tmp_path):
    from nearsight.models.export import export_torchscript

    model = tiny([1, 8], channels=4, l_max=2, num_layers=2, parity="both", element_mix=True)
    g = atoms_to_graph(water_box(2), model.cutoff, torch.float64)
    ref = ForceField(model)(g)
    export_torchscript(model, tmp_path / "model.ts")
    ts = torch.jit.load(str(tmp_path / "model.ts"))
    assert ts.cutoff == model.cutoff and list(ts.species) == [1, 8]
    args = [g[k] for k in (keys.POSITIONS, keys.ATOMIC_NUMBERS, keys.CELL, keys.BATCH, keys.EDGE_INDEX)]
    out = ts(*args, g[keys.CELL_SHIFTS])
    torch.testing.assert_close(out[keys.ENERGY], ref[keys.ENERGY], atol=1e-12, rtol=0)
    torch.testing.assert_close(out[keys.FORCES], ref[keys.FORCES], atol=1e-12, rtol=0)
    with pytest.raises(torch.jit.Error, match="element the model was not trained on"):
        ts(*args[:1], torch.full_like(args[1], 6), *args[2:], g[keys.CELL_SHIFTS])


def test_layer_centres_give_the_owned_energies_of_the_full_graph():
    """The LAMMPS plugin's ghost handling in Python (nearsight.models.receptive): layer t updates only
    the atoms within layers − 1 − t hops of the owned ones (keys.LAYER_CENTRES), edges only around
    layer 0's; the owned atoms' energies and their gradients equal the full graph's to round-off."""
    from nearsight.models.aoti import layer_centres_of

    model = tiny([1, 8], seed=3, num_layers=2)
    atoms = water_box(5)
    atoms.pbc = False
    centre = atoms.positions.mean(0)
    atoms = atoms[np.argsort(np.linalg.norm(atoms.positions - centre, axis=1))]
    owned = torch.zeros(len(atoms), dtype=torch.bool)
    owned[torch.randperm(40, generator=torch.Generator().manual_seed(0))[:12]] = True  # not a prefix

    def energies(centres=None):
        g = atoms_to_graph(atoms, model.cutoff, torch.float64)
        if centres is not None:
            keep = torch.isin(g[keys.EDGE_INDEX][0], centres[0])  # edges only around layer 0's atoms
            g[keys.EDGE_INDEX], g[keys.CELL_SHIFTS] = g[keys.EDGE_INDEX][:, keep], g[keys.CELL_SHIFTS][keep]
            for t, c in enumerate(centres):
                g[f"{keys.LAYER_CENTRES}_{t}"] = c
        positions = g[keys.POSITIONS].requires_grad_(True)
        g[keys.EDGE_VECTORS] = edge_vectors(
            positions, g[keys.CELL], g[keys.BATCH], g[keys.EDGE_INDEX], g[keys.CELL_SHIFTS]
        )
        e = model(g)[keys.ATOMIC_ENERGIES]
        (grad,) = torch.autograd.grad(e[owned].sum(), positions)
        return e, grad, g

    full, grad_full, g = energies()
    centres = layer_centres_of(g[keys.EDGE_INDEX], owned, model.num_layers)
    assert torch.equal(centres[-1], owned.nonzero()[:, 0])
    assert owned.sum() < len(centres[0]) < len(atoms) / 2  # most atoms are never updated
    part, grad_part, _ = energies(centres)
    assert torch.all(part[~owned] == 0)
    torch.testing.assert_close(part[owned], full[owned], rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_part, grad_full, rtol=0, atol=1e-12)
    # one hop short: layer 0 without the atoms one hop out of the owned ones changes the energies
    short = [centres[1], centres[1]]
    assert (energies(short)[0][owned] - full[owned]).abs().max() > 1e-6
