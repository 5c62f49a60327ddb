"""nearsight.locality: force-response and density-matrix decay, a model's hard range, the command.

Physics asserted: a pair potential's response is exactly zero beyond its cutoff; an exponential
pair potential's fitted decay length is its λ; a dimerised (gapped) H chain's density matrix decays
faster than the equally spaced (metallic) one, and electronic temperature speeds up the metal's
decay; a message-passing model's response vanishes exactly beyond 2 × layers × r_c and reaches
past layers × r_c.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones

from nearsight.locality import (
    density_matrix_decay,
    fit_decay,
    force_response,
    format_table,
    locality_summary,
    model_force_response,
    receptive_field,
)


class ExponentialPairs(Calculator):
    """E = Σ_{i<j} A exp(−r_ij/λ): K_ij = A e^{−r/λ}/λ² for r > λ, decay length exactly λ."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, prefactor: float = 50.0, decay_length: float = 0.6) -> None:
        super().__init__()
        self.a, self.lam = prefactor, decay_length

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        pos = self.atoms.positions
        d = pos[:, None, :] - pos[None, :, :]  # R_i - R_j
        r = np.linalg.norm(d, axis=-1)
        np.fill_diagonal(r, np.inf)
        phi = self.a * np.exp(-r / self.lam)
        dphi = -phi / self.lam  # dφ/dr
        self.results = {
            "energy": 0.5 * phi[np.isfinite(r)].sum(),
            "forces": -np.einsum("ij,ijk->ik", dphi / r, d),
        }


def _chain(spacings: list[float], rattle: float = 0.0, seed: int = 0) -> Atoms:
    x = np.concatenate([[0.0], np.cumsum(spacings)])
    atoms = Atoms(f"H{len(x)}", positions=np.c_[x, np.zeros_like(x), np.zeros_like(x)])
    if rattle:
        atoms.positions += np.random.default_rng(seed).normal(scale=rattle, size=atoms.positions.shape)
    return atoms


def test_exponential_pair_potential_gives_its_decay_length():
    lam = 0.6
    atoms = _chain([1.3, 0.9, 1.6, 1.1, 1.4, 1.2, 1.5], rattle=0.1)
    result = force_response(atoms, ExponentialPairs(decay_length=lam), centres=[0, 3])
    fit = result.fit
    assert fit.better == "exponential"
    assert fit.decay_length == pytest.approx(lam, rel=0.03)
    assert result.noise < 1e-6  # sum rule and Hessian symmetry hold for an analytic calculator
    # the blocks are those of the pair potential: K = A e^{-r/λ}/λ² for r > λ
    expected = 50.0 * np.exp(-result.distances / lam) / lam**2
    far = result.distances > 1.0
    np.testing.assert_allclose(result.response[far], expected[far], rtol=2e-3)


def test_lennard_jones_response_vanishes_beyond_its_cutoff():
    rc = 2.5
    rng = np.random.default_rng(3)
    positions = [[0.0, 0.0, 0.0]]
    while len(positions) < 12:  # a random cluster with no pair closer than 0.9 σ
        p = rng.uniform(0.0, 5.0, 3)
        if np.min(np.linalg.norm(np.array(positions) - p, axis=1)) > 0.9:
            positions.append(list(p))
    atoms = Atoms("Ar12", positions=positions)
    delta = 0.01
    result = force_response(atoms, LennardJones(sigma=1.0, epsilon=1.0, rc=rc), centres=[0, 5], delta=delta)
    outside = result.distances > rc + delta
    inside = result.distances < rc - delta
    assert outside.any() and inside.any()
    assert np.all(result.response[outside] == 0.0)
    assert np.all(result.response[inside] > 0.0)
    # a cutoff at the potential's own range neglects nothing; a tolerance that small needs all of it
    assert result.neglected_force(rc + delta) == 0.0
    assert result.cutoff_for(1e-12) <= rc + delta


def test_cutoff_for_sum_and_max():
    atoms = _chain([1.0] * 9)
    result = force_response(atoms, ExponentialPairs(decay_length=0.5), centres=[0])
    tol = 1e-3
    r_sum = result.cutoff_for(tol, amplitude_A=0.1, kind="sum")
    r_max = result.cutoff_for(tol, amplitude_A=0.1, kind="max")
    assert r_max <= r_sum  # one atom moving neglects less than all of them
    assert result.neglected_force(r_sum, 0.1, "sum") <= tol < result.neglected_force(r_sum - 1.0, 0.1, "sum")
    # K(r) = 50 e^{-2r}/0.25 = 200 e^{-2r}; max-criterion: 0.1 · 200 e^{-2 r'} ≤ 1e-3 for the next r' = r_c + 1
    assert r_max == pytest.approx(math.ceil(math.log(20.0 / tol) / 2.0) - 1.0)
    for bad in (0.0, -0.01):
        with pytest.raises(ValueError, match=f"tolerance must be a positive force.*{bad}"):
            result.cutoff_for(bad)


def test_fit_decay_tells_power_law_from_exponential():
    r = np.linspace(2.0, 30.0, 40)
    power = fit_decay(r, 0.3 * r**-1.0)
    assert power.better == "power law" and power.exponent == pytest.approx(1.0, rel=1e-6)
    expo = fit_decay(r, np.exp(-r / 2.5))
    assert expo.better == "exponential" and expo.decay_length == pytest.approx(2.5, rel=1e-6)
    # Friedel-like zeros at every other distance do not spoil the envelope fit
    friedel = np.abs(np.sin(np.pi * np.arange(1, 41) / 2)) / np.arange(1, 41)
    assert fit_decay(np.arange(1.0, 41.0), friedel, floor=1e-12).exponent == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="only 2 distinct"):
        fit_decay([1.0, 2.0], [1.0, 0.5])


def test_bad_input_names_the_value():
    with pytest.raises(ValueError, match="H has 1 atom"):
        force_response(Atoms("H"), ExponentialPairs())
    with pytest.raises(ValueError, match="centre 7 is not an atom index"):
        force_response(_chain([1.0, 1.0]), ExponentialPairs(), centres=[7])
    with pytest.raises(ValueError, match="delta must be a positive.*-0.1"):
        force_response(_chain([1.0, 1.0]), ExponentialPairs(), delta=-0.1)
    with pytest.raises(ValueError, match="no_such_model.pt.*does not exist"):
        model_force_response(_chain([1.0, 1.0]), "no_such_model.pt")


def _small_equivariant(cutoff: float = 2.0, layers: int = 2) -> torch.nn.Module:
    from nearsight.models.equivariant import EquivariantPotential

    torch.manual_seed(0)
    args = {"channels": 4, "l_max": 1, "sh_l_max": 2, "correlation": 2, "num_layers": layers}
    model = EquivariantPotential([1], cutoff=cutoff, radial_hidden=(8,), readout_hidden=4, **args).double()
    model.set_statistics({1: -13.6}, 0.5, avg_num_neighbours=2.0)
    return model.eval()


def test_model_response_is_zero_beyond_its_force_range():
    model = _small_equivariant(cutoff=2.0, layers=2)
    ranges = receptive_field(model)
    assert ranges["receptive_field"] == 4.0 and ranges["force_range"] == 8.0
    atoms = _chain([1.5] * 11, rattle=0.05, seed=1)  # only nearest neighbours are within r_c
    result = model_force_response(atoms, model, centres=[0, 5])
    beyond = result.distances > ranges["force_range"]
    assert beyond.any()
    assert np.all(result.response[beyond] == 0.0)
    # two layers: atoms four bonds apart (≈ 6 Å, past layers × r_c) still interact through the
    # atom in the middle, which sees both within two hops; five bonds apart they do not
    past_receptive = (result.distances > ranges["receptive_field"]) & (result.distances < 6.5)
    assert past_receptive.any() and np.all(result.response[past_receptive] > 0.0)
    assert np.all(result.response[result.distances > 7.0] == 0.0)
    # the autograd Hessian agrees with finite differences of the model's forces
    from nearsight.calculator import NearsightCalculator

    fd = force_response(atoms, NearsightCalculator(model), centres=[5], delta=1e-4)
    auto = result.response[result.centres == 5]
    np.testing.assert_allclose(fd.response, auto, rtol=1e-5, atol=1e-8)
    summary = locality_summary(model=result, receptive=ranges, tolerances=(0.01,))
    assert summary["model"]["max_response_beyond_force_range"] == 0.0
    assert "force range 8 A" in format_table(summary)


def _h_chain(n: int, short: float, long: float) -> Atoms:
    return _chain([short if k % 2 == 0 else long for k in range(n - 1)])


def test_density_matrix_of_dimerised_chain_decays_faster_and_smearing_helps_the_metal():
    n = 24
    centre = [n // 2 - 1]
    kw = {"method": "dft", "xc": "lda,vwn", "basis": "sto-3g", "centres": centre, "fit_window": (3.0, None)}
    metal = density_matrix_decay(_h_chain(n, 1.0, 1.0), **kw)
    insulator = density_matrix_decay(_h_chain(n, 0.74, 1.26), **kw)
    hot = density_matrix_decay(_h_chain(n, 1.0, 1.0), electronic_temperature_K=30000.0, **kw)
    assert insulator.gap_eV > 5.0 > metal.gap_eV
    assert insulator.fit.decay_length < 0.6 * metal.fit.decay_length
    assert insulator.fit.better == "exponential"
    assert hot.fit.decay_length < 0.8 * metal.fit.decay_length
    # 8-10 Å from the centre the metal's density matrix is several times larger
    far = lambda d: d.values[(d.distances > 8.0) & (d.distances < 10.5)].max()  # noqa: E731
    assert far(metal) > 3.0 * far(insulator)
    # one spin's density matrix in an orthonormal basis: idempotent at T = 0, eigenvalues in [0, 1]
    assert np.all(insulator.values <= 1.0 + 1e-9)


def test_density_matrix_of_periodic_chain_with_kpoints():
    atoms = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.74, 0.0, 0.0]], cell=[2.0, 5.0, 5.0], pbc=True)
    result = density_matrix_decay(atoms, method="dft", xc="lda,vwn", basis="sto-3g", kpts=(8, 1, 1))
    assert result.distances.max() == pytest.approx(8.0)  # half the Born-von Kármán supercell
    order = np.argsort(result.distances)
    assert result.distances[order[0]] == pytest.approx(0.74)  # the bonded partner couples most
    assert result.values[order[0]] == result.values.max()
    # the k-space transform reproduces the middle of a long finite chain (atom 9: a dimer's right atom)
    finite = density_matrix_decay(
        _h_chain(20, 0.74, 1.26), method="dft", xc="lda,vwn", basis="sto-3g", centres=[9]
    )
    # (same-sublattice pairs, 2 Å apart, nearly vanish; at 3.26 Å the finite chain's ends show)
    for r, rel in ((0.74, 0.03), (1.26, 0.03), (2.74, 0.03), (3.26, 0.15)):
        periodic = result.values[(result.centres == 1) & np.isclose(result.distances, r)]
        middle = finite.values[np.isclose(finite.distances, r)]
        assert periodic.max() == pytest.approx(middle.max(), rel=rel), r
    assert result.gap_eV > 3.0
    with pytest.raises(ValueError, match="pbc = \\[True, False, False\\]"):
        density_matrix_decay(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[2, 5, 5], pbc=[1, 0, 0]))
    with pytest.raises(ValueError, match="electronic_temperature_K.*-5"):
        density_matrix_decay(atoms, electronic_temperature_K=-5.0)


def test_command_writes_json_and_plot(tmp_path):
    from ase.build import fcc111

    from nearsight.cli.main import main
    from nearsight.models.io import save_model

    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    slab.pbc = False
    slab.info.clear()
    path = tmp_path / "slab.xyz"
    slab.write(path)
    model_path = save_model(_small_equivariant(cutoff=2.0, layers=1), tmp_path / "model.pt")
    # the model knows only H: ask for it on an H chain, EMT on the Cu slab
    chain = tmp_path / "chain.xyz"
    _chain([1.5] * 6).write(chain)
    out = tmp_path / "out"
    assert main(["locality", str(path), "--calculator", "emt", "--centres", "0", "--tolerance", "0.01", "0.05",
                 "--output-dir", str(out)]) == 0  # fmt: skip
    summary = json.loads((out / "locality.json").read_text())
    assert [c["tolerance_eV_per_A"] for c in summary["reference"]["cutoffs"]] == [0.01, 0.05]
    assert summary["reference"]["cutoffs"][0]["cutoff_A"] >= summary["reference"]["cutoffs"][1]["cutoff_A"]
    assert (out / "locality.png").stat().st_size > 1000
    assert main(["locality", str(chain), "--model", str(model_path), "--output-dir", str(out)]) == 0
    summary = json.loads((out / "locality.json").read_text())
    assert summary["model"]["ranges_A"]["force_range"] == 4.0
    assert summary["model"]["max_response_beyond_force_range"] == 0.0
    # the density matrix through the command: one curve per electronic temperature, no forces
    h8 = tmp_path / "h8.xyz"
    _h_chain(8, 0.74, 1.26).write(h8)
    argv = ["locality", str(h8), "--method", "lda,vwn", "--basis", "sto-3g", "--density-matrix", "--skip-forces",
            "--electronic-temperature-K", "0", "30000", "--centres", "3", "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "locality.json").read_text())
    assert [d["electronic_temperature_K"] for d in summary["density_matrix"]] == [0.0, 30000.0]
    assert "reference" not in summary and summary["density_matrix"][0]["gap_eV"] > 5.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--calculator", "emt", "--tolerance", "0"], "--tolerance must be positive.*0.0"),
        (["--model", "missing.pt"], "model file 'missing.pt' does not exist"),
        (["--calculator", "emt"], "has 1 atom"),
    ],
)
def test_command_errors_name_the_value(tmp_path, capsys, argv, message):
    from nearsight.cli.main import main

    one = tmp_path / "one.xyz"
    Atoms("Cu").write(one)
    assert main(["locality", str(one), *argv, "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nearsight locality: error:")
    import re

    assert re.search(message, err), err
