"""Long-range-aware additivity (issue 17, item 8): far-apart fragments of a model with Coulomb and/or
D3 interact as k_e Q_A Q_B / d + O(1/d^p); the check passes on models with the right physics and
fails on a wrong prefactor, a wrong expectation and charge moved between far fragments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from nearsight.testing import (
    check_additivity,
    check_long_range_additivity,
    format_report,
    long_range_terms,
    run_all_checks,
)
from nearsight.testing import longrange as lr_checks
from nearsight.testing.longrange import K_E, extrapolate_to_zero
from nearsight.training.config import validate_config
from nearsight.training.model_setup import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(longrange: dict, charges: tuple[float, float] | None = None, scale: float = 0.1):
    """BPNN (H, O; cutoff 3.5 Å) with tiny random weights (×``scale``) under ``longrange``.

    ``charges``: the charge head's last layer is set to constant raw charges per element (H, O),
    so that fragments whose raw charges add up to their total charge keep it in any company: the
    charges are conserved per structure only (q_i = q̃_i + (Q − Σq̃)/N), which otherwise moves
    charge between far-apart fragments.
    """
    section = {"cutoff": 3.5, "n_radial": 4, "n_angular_eta": 1, "hidden": [8], "longrange": longrange}
    cfg = validate_config({"data": {"train": "x"}, "model": section})
    torch.manual_seed(0)
    model = build_model(cfg["model"], [1, 8]).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
        if charges is not None:
            for net, q in zip(model.short.charge_nets, charges, strict=True):
                net[-1].weight.zero_()
                net[-1].bias.fill_(q)
    return model


def _ions() -> tuple[Atoms, Atoms]:
    """H3O+ (raw charges O −0.5, H +0.5: Σ = +1) and O2− (Σ = −1)."""
    h3o = Atoms("OH3", positions=[[0, 0, 0.1], [0.95, 0, 0], [-0.47, 0.82, 0], [-0.47, -0.82, 0]])
    o2 = Atoms("O2", positions=[[0, 0, 0], [0.1, 0, 1.3]])
    h3o.info["charge"], o2.info["charge"] = 1, -1
    return h3o, o2


IONIC = {"coulomb": {}}  # direct sum for clusters


def test_charged_fragments_interact_as_k_qa_qb_over_d():
    model = _model(IONIC, charges=(0.5, -0.5))
    result = check_long_range_additivity(model, *_ions()).assert_ok()
    assert result.error < 1e-4
    assert "lim d ΔE = -14.3998 eV·Å (k_e Q_A Q_B = -14.3996)" in result.detail
    assert "charge moved onto A in the pair at 6.1 Å: 0 e" in result.detail
    # the exact additivity of a short-range model does not hold here: it fails, pointing to this check
    plain = check_additivity(model, _ions()[0], _ions()[1])
    assert not plain.passed and "check_long_range_additivity" in plain.detail


def test_doubled_coulomb_prefactor_fails():
    model = _model({"coulomb": {"prefactor": 2 * K_E}}, charges=(0.5, -0.5))
    result = check_long_range_additivity(model, *_ions())
    assert not result.passed and result.error == pytest.approx(0.5, abs=0.01), result.detail


def test_wrong_expectation_fails(monkeypatch):
    """The same model against k_e of the opposite sign (Q_A Q_B flipped in the expectation)."""
    model = _model(IONIC, charges=(0.5, -0.5))
    monkeypatch.setattr(lr_checks, "K_E", -K_E)
    result = check_long_range_additivity(model, *_ions())
    assert not result.passed and result.error == pytest.approx(2.0, abs=0.01), result.detail


def test_charge_moved_between_far_fragments_fails():
    """Raw charges that do not add up to each fragment's charge: conservation of the pair's total
    charge alone puts about −1 e on H3O+ at any distance, and ΔE stops decaying."""
    result = check_long_range_additivity(_model(IONIC, scale=1.0), *_ions())
    assert not result.passed and result.error > 1.0, result.detail
    moved = float(result.detail.split("charge moved onto A in the pair at 6.1 Å: ")[1].split(" e")[0])
    assert moved < -0.5


def test_neutral_fragments_decay_as_dipole_dipole_and_d3_as_r6():
    water = molecule("H2O")
    dimer = molecule("H2O") + molecule("H2O")
    dimer.positions[3:] += [2.8, 0.2, 0.1]
    for longrange in (IONIC, {"coulomb": {}, "dispersion": {"functional": "pbe"}}, {"dispersion": {}}):
        model = _model(longrange, scale=1.0)
        for atoms in (water, dimer):  # B: a rotated copy of A, so no charge moves between them
            result = check_long_range_additivity(model, atoms).assert_ok()
            order = "O(1/d^3)" if longrange.get("coulomb") is not None else "O(1/d^6)"
            assert order in result.detail
    # a dispersion tail too slow for D3 (−1 eV Å⁴/d⁴ between the two molecules) fails the D3-only check
    result = check_long_range_additivity(_SlowTail(_model({"dispersion": {}}, scale=1.0)), water)
    assert not result.passed and result.error > 1.0, result.detail


class _SlowTail(torch.nn.Module):
    """A D3 model plus −1/d⁴ (eV, d in Å) between the centres of the two halves of a 6-atom structure."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.dispersion = inner, inner.dispersion
        self.cutoff, self.species = inner.cutoff, inner.species

    def forward(self, graph: dict) -> dict:
        out = dict(self.inner(graph))
        pos = graph["positions"]
        if pos.shape[0] == 6:
            d = torch.linalg.norm(pos[:3].mean(0) - pos[3:].mean(0))
            out["atomic_energies"] = out["atomic_energies"] - 1.0 / d**4 / 6
        return out


def test_report_picks_the_long_range_check_and_terms_are_detected():
    model = _model({"coulomb": {}, "dispersion": {"functional": "pbe"}}, scale=1.0)
    assert set(long_range_terms(model)) == {"coulomb", "dispersion"}
    assert long_range_terms(model.short) == {}
    water = molecule("H2O")
    results = run_all_checks(
        model, molecule=water, rng=0, skip=("isolated_atom", "smoothness", "forces_fd", "permutation")
    )
    names = [r.name for r in results]
    assert "longrange_additivity[molecule]" in names and "additivity[molecule]" not in names
    assert all(r.passed for r in results), format_report(results)
    short = run_all_checks(model.short, molecule=water, rng=0, skip=("isolated_atom", "smoothness"))
    assert "additivity[molecule]" in [r.name for r in short]


def test_extrapolation_is_exact_for_polynomials():
    x = np.array([1.0, 0.5, 0.25, 0.125])
    assert extrapolate_to_zero(x, 3.0 - 2.0 * x + 5.0 * x**3) == pytest.approx(3.0, abs=1e-12)
