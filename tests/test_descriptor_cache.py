"""Descriptor cache (``training.cache_descriptors``): the stored descriptors and their derivatives
give the energies, forces, stress and weight gradients of the full descriptor, and a run trains the
same weights with and without it."""

from __future__ import annotations

import pytest
import torch

from nearsight import keys
from nearsight.data.neighbours import atoms_to_graph, collate
from nearsight.descriptors.acsf import default_acsf_params
from nearsight.descriptors.cache import (
    DESCRIPTOR_JACOBIAN,
    attach_descriptor_cache,
    cache_size_bytes,
    detach_descriptor_cache,
)
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.forcefield import ForceField
from nearsight.training.config import ConfigError, validate_config
from nearsight.training.trainer import Trainer
from structures import si_small_cell, water_box
from training_helpers import TINY_ACSF, tiny_config

DESCRIPTORS = {
    "acsf_g4": {"type": "acsf", "r_cut": 3.5, **default_acsf_params(3.5, 4, None, 1, "g4", 2, 2)},
    "acsf_ani": {"type": "acsf", "r_cut": 3.5, **default_acsf_params(3.5, 4, 3.0, 1, "ani", 2, 2)},
    "soap": {
        "type": "soap", "r_cut": 3.5, "n_max": 3, "l_max": 2, "sigma": 0.5,
        "weighting": {"function": "poly", "r0": 3.5, "c": 1.0, "m": 2.0},
    },
    "soap_bispectrum": {
        "type": "soap", "r_cut": 3.5, "n_max": 3, "l_max": 2, "sigma": 0.5,
        "weighting": {"function": "poly", "r0": 3.5, "c": 1.0, "m": 2.0}, "bispectrum": {"n_max": 2, "l_max": 2},
    },
}  # fmt: skip


def _model(kind: str, species: list[int]) -> BehlerParrinello:
    torch.manual_seed(0)
    model = BehlerParrinello(species, DESCRIPTORS[kind], hidden=[8]).double()
    with torch.no_grad():  # a non-trivial standardisation, so the cached path goes through it
        model.feature_mean.normal_()
        model.feature_std.uniform_(0.5, 2.0)
    return model


def _structures():
    si = si_small_cell() * (2, 1, 1)
    water = water_box(n_side=2)
    water.rattle(0.05, seed=1)
    return {"si": ([14], [si]), "water": ([1, 8], [water, water_box(n_side=2, seed=3)])}


def _loss_and_grads(model, batch):
    out = ForceField(model)(batch, forces=True, stress=True, create_graph=True)
    loss = (out[keys.ENERGY] ** 2).sum() + (out[keys.FORCES] ** 2).sum() + (out[keys.STRESS] ** 2).sum() * 1e3
    model.zero_grad()
    loss.backward()
    return out, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", sorted(DESCRIPTORS))
@pytest.mark.parametrize("system", ["si", "water"])
def test_cached_descriptors_give_the_same_forces_stress_and_weight_gradients(kind, system):
    species, structures = _structures()[system]
    model = _model(kind, species).train()
    graphs = [atoms_to_graph(a, model.cutoff) for a in structures]
    batch = collate(graphs)
    direct, direct_grads = _loss_and_grads(model, batch)
    cached_graphs = [dict(g) for g in graphs]
    attach_descriptor_cache(model.descriptor, cached_graphs)
    jacobian = cached_graphs[0][DESCRIPTOR_JACOBIAN]
    assert jacobian.shape == (graphs[0][keys.EDGE_INDEX].shape[1], 3, model.descriptor.n_features)
    assert cache_size_bytes(cached_graphs, model.descriptor.n_features, torch.float64) == 8 * sum(
        g[DESCRIPTOR_JACOBIAN].numel() + g["descriptors"].numel() for g in cached_graphs
    )
    cached, cached_grads = _loss_and_grads(model, collate(cached_graphs))
    for name in (keys.ENERGY, keys.FORCES, keys.STRESS):
        assert torch.allclose(cached[name], direct[name], rtol=1e-10, atol=1e-12), name
    assert direct[keys.FORCES].abs().max() > 1e-3 and direct[keys.STRESS].abs().max() > 1e-5
    for a, b in zip(cached_grads, direct_grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)
    # evaluation without gradients reads the stored values
    with torch.no_grad():
        assert torch.equal(model.features(collate(cached_graphs)), collate(cached_graphs)["descriptors"])
    detach_descriptor_cache(cached_graphs)
    assert "descriptors" not in cached_graphs[0] and DESCRIPTOR_JACOBIAN not in cached_graphs[0]


def test_a_run_trains_the_same_weights_with_the_cache(tmp_path, capsys):
    weights = {}
    for cache in (False, True):
        cfg = tiny_config(tmp_path / str(cache), cache_descriptors=cache)
        cfg["dtype"] = "float64"
        trainer = Trainer(validate_config(cfg))
        trainer.train()
        weights[cache] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for name, value in weights[False].items():
        assert torch.allclose(weights[True][name], value, rtol=1e-8, atol=1e-10), name
    out = capsys.readouterr().out
    assert "descriptor cache: 57 frames" in out and "counted in the time budget" in out  # 12 train + 45 valid


def test_equivariant_models_have_nothing_to_cache(tmp_path):
    cfg = tiny_config(tmp_path, cache_descriptors=True)
    cfg["model"] = {"type": "equivariant", "cutoff": 3.5, "equivariant": {"preset": "small"}}
    trainer = Trainer(validate_config(cfg))
    with pytest.raises(ConfigError, match="equivariant model has no fixed descriptors to cache"):
        trainer.setup()


def test_cache_option_is_checked():
    with pytest.raises(ConfigError, match="cache_descriptors"):
        validate_config(
            {"data": {"train": "x"}, "model": TINY_ACSF, "training": {"cache_descriptors": "yes"}}
        )
