"""Diabatic models on both backbones (nearsight.nonadiabatic): per-atom contributions to V_d, exact
per-state forces and couplings, symmetry (the pseudoscalar readout changes sign under a reflection),
extensivity, finite derivatives at a degeneracy, model files, and training through the trainer on
per-state labels with the sign-free coupling loss and clear errors for bad labels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write

from nearsight import keys
from nearsight.data.frame import Frame
from nearsight.data.neighbours import collate, frame_to_graph
from nearsight.descriptors.acsf import default_acsf_params
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.equivariant import EquivariantPotential
from nearsight.models.forcefield import ForceField
from nearsight.models.io import load_model, model_from_dict, model_to_dict
from nearsight.nonadiabatic.couplings import derivative_couplings
from nearsight.nonadiabatic.eigen import adiabatic_states
from nearsight.training.config import ConfigError, validate_config
from nearsight.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
SPECIES = [1, 6, 7]
CUTOFF = 4.0


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _equivariant(couplings: str = "both", n_states: int = 2, state_parity=None) -> EquivariantPotential:
    torch.manual_seed(0)
    return EquivariantPotential(
        SPECIES, cutoff=CUTOFF, channels=8, l_max=1, sh_l_max=2, correlation=2, parity="both",
        n_states=n_states, couplings=couplings, radial_hidden=(8,), state_parity=state_parity,
    )  # fmt: skip


def _bpnn(n_states: int = 3) -> BehlerParrinello:
    torch.manual_seed(0)
    descriptor = {"r_cut": CUTOFF, **default_acsf_params(CUTOFF, 4, None, 1, "ani", 4, 2)}
    return BehlerParrinello(SPECIES, descriptor, [8], n_states=n_states)


def _molecule(seed: int = 0) -> Atoms:
    """A distorted, non-planar H2C-NH2 (methaniminium without its charge)."""
    rng = np.random.default_rng(seed)
    positions = np.array(
        [
            [0.0, 0, 0],
            [1.3, 0, 0],
            [-0.55, 0.95, 0.1],
            [-0.55, -0.95, -0.1],
            [1.85, 0.9, 0.2],
            [1.85, -0.9, 0.3],
        ]
    )
    return Atoms("CNHHHH", positions=positions + rng.normal(0, 0.08, positions.shape))


def _graph(atoms: Atoms) -> dict:
    return collate([frame_to_graph(Frame.from_atoms(atoms), CUTOFF, torch.float64)])


@pytest.mark.parametrize("make", [_equivariant, _bpnn], ids=["equivariant", "bpnn"])
def test_state_forces_and_couplings_against_finite_differences(make, float64):
    ff = ForceField(make())
    graph = _graph(_molecule())
    out = ff(graph)
    S = out[keys.STATE_ENERGIES].shape[1]
    assert out[keys.DIABATIC_MATRIX].shape == (1, S, S) and out[keys.STATE_FORCES].shape == (6, S, 3)
    torch.testing.assert_close(out[keys.ENERGY], out[keys.STATE_ENERGIES][:, 0])
    torch.testing.assert_close(out[keys.FORCES], out[keys.STATE_FORCES][:, 0])
    _, U = adiabatic_states(out[keys.DIABATIC_MATRIX].detach())
    a, b = torch.triu_indices(S, S, 1)

    def at(pos):
        o = ff({**graph, keys.POSITIONS: pos}, forces=False)
        return o[keys.STATE_ENERGIES][0].detach(), o[keys.DIABATIC_MATRIX][0].detach()

    step = 1e-5
    for atom in range(6):
        for x in range(3):
            plus, minus = graph[keys.POSITIONS].clone(), graph[keys.POSITIONS].clone()
            plus[atom, x] += step
            minus[atom, x] -= step
            (e1, v1), (e2, v2) = at(plus), at(minus)
            fd_forces = -(e1 - e2) / (2 * step)
            torch.testing.assert_close(
                out[keys.STATE_FORCES][atom, :, x].detach(), fd_forces, atol=1e-6, rtol=0
            )
            dV = (v1 - v2) / (2 * step)
            fd_h = (U[0].T @ dV @ U[0])[a, b]  # u_iᵀ (∂V/∂x) u_j
            torch.testing.assert_close(
                out[keys.STATE_COUPLINGS][atom, :, x].detach(), fd_h, atol=1e-6, rtol=0
            )


def test_symmetry_rotation_and_the_pseudoscalar_coupling_under_reflection(float64):
    atoms = _molecule(1)
    scalar = ForceField(_equivariant("scalar"))
    pseudo = ForceField(_equivariant("pseudoscalar"))
    both = ForceField(_equivariant("both"))
    mirror = atoms.copy()
    mirror.positions[:, 2] *= -1
    rotated = atoms.copy()
    rotated.rotate(37, (1, 2, 3), center="COM")
    rotated.translate((0.4, -1.0, 2.0))
    for ff in (scalar, pseudo, both):
        V, V_rot = (ff(_graph(x), forces=False)[keys.DIABATIC_MATRIX][0].detach() for x in (atoms, rotated))
        torch.testing.assert_close(V_rot, V, atol=1e-10, rtol=0)
    V, V_mirror = (scalar(_graph(x), forces=False)[keys.DIABATIC_MATRIX][0].detach() for x in (atoms, mirror))
    torch.testing.assert_close(V_mirror, V, atol=1e-10, rtol=0)
    V, V_mirror = (pseudo(_graph(x), forces=False)[keys.DIABATIC_MATRIX][0].detach() for x in (atoms, mirror))
    torch.testing.assert_close(torch.diagonal(V_mirror), torch.diagonal(V), atol=1e-10, rtol=0)
    assert abs(float(V[0, 1])) > 1e-4
    torch.testing.assert_close(V_mirror[0, 1], -V[0, 1], atol=1e-10, rtol=0)  # 0o: changes sign
    V, V_mirror = (both(_graph(x), forces=False)[keys.DIABATIC_MATRIX][0].detach() for x in (atoms, mirror))
    assert abs(float(V_mirror[0, 1] - V[0, 1])) > 1e-6 and abs(float(V_mirror[0, 1] + V[0, 1])) > 1e-6


def test_state_parity_makes_the_diabatic_matrix_reflect_as_p_v_p(float64):
    """Three states of parities (+1, +1, −1): V_d(σR) = P V_d(R) P, so V_01 keeps its sign, V_02 and
    V_12 change it, and the adiabatic energies are exactly invariant (a sum of both is not)."""
    atoms = _molecule(1)
    mirror = atoms.copy()
    mirror.positions[:, 1] *= -1
    P = torch.diag(torch.tensor([1.0, 1.0, -1.0]))
    ff = ForceField(_equivariant(n_states=3, state_parity=[1, 1, -1]))
    out, out_mirror = (ff(_graph(x), forces=False) for x in (atoms, mirror))
    V, V_mirror = out[keys.DIABATIC_MATRIX][0].detach(), out_mirror[keys.DIABATIC_MATRIX][0].detach()
    assert all(abs(float(V[a, b])) > 1e-4 for a, b in ((0, 1), (0, 2), (1, 2)))
    torch.testing.assert_close(V_mirror, P @ V @ P, atol=1e-10, rtol=0)
    torch.testing.assert_close(
        out_mirror[keys.STATE_ENERGIES].detach(), out[keys.STATE_ENERGIES].detach(), atol=1e-10, rtol=0
    )
    both = ForceField(_equivariant("both", n_states=3))
    E, E_mirror = (both(_graph(x), forces=False)[keys.STATE_ENERGIES].detach() for x in (atoms, mirror))
    assert float((E - E_mirror).abs().max()) > 1e-8  # the negative control
    # every state of one parity: all couplings scalar, the same readout as couplings="scalar"
    same = _equivariant(n_states=3, state_parity=[-1, -1, -1])
    scalar = _equivariant("scalar", n_states=3)
    graph = _graph(atoms)
    torch.testing.assert_close(
        ForceField(same)(graph, forces=False)[keys.DIABATIC_MATRIX],
        ForceField(scalar)(graph, forces=False)[keys.DIABATIC_MATRIX],
        atol=0, rtol=0,
    )  # fmt: skip
    copy = model_from_dict(model_to_dict(ff.model))
    assert copy.state_parity == [1, 1, -1]
    torch.testing.assert_close(
        ForceField(copy)(graph, forces=False)[keys.DIABATIC_MATRIX],
        ff(graph, forces=False)[keys.DIABATIC_MATRIX], atol=0, rtol=0,
    )  # fmt: skip


def test_state_parity_errors():
    with pytest.raises(ValueError, match=r"state_parity = \[1, 0\] must be a list of 2 entries"):
        _equivariant(state_parity=[1, 0])
    with pytest.raises(ValueError, match="must be a list of 3 entries"):
        _equivariant(n_states=3, state_parity=[1, -1])
    with pytest.raises(ValueError, match="invariant under reflections"):
        BehlerParrinello(SPECIES, {"r_cut": CUTOFF}, [8], n_states=2, state_parity=[1, -1])
    BehlerParrinello(SPECIES, {"r_cut": CUTOFF}, [8], n_states=2, state_parity=[-1, -1])  # all scalar
    with pytest.raises(ValueError, match=r"state_parity = \[1, -1\] needs a pseudoscalar"):
        EquivariantPotential(SPECIES, cutoff=CUTOFF, channels=4, n_states=2, state_parity=[1, -1])
    base = {"data": {"train": "x.xyz"}, "model": {"n_states": 2, "state_parity": [1, -1]}}
    with pytest.raises(ConfigError, match="model.state_parity: .*ACSF descriptors are invariant"):
        validate_config(base)
    with pytest.raises(ConfigError, match="model.state_parity = \\[1, -1\\] needs .*parity: both"):
        validate_config({**base, "model": {**base["model"], "type": "equivariant"}})
    with pytest.raises(ConfigError, match="leave out model.couplings = 'both'"):
        validate_config({**base, "model": {**base["model"], "couplings": "both"}})
    with pytest.raises(ConfigError, match="must be a list of 2 entries, each \\+1 or -1"):
        validate_config({**base, "model": {"n_states": 2, "state_parity": [1, 2]}})
    with pytest.raises(ConfigError, match="state_parity needs model.n_states > 1"):
        validate_config({**base, "model": {"state_parity": [1]}})
    equivariant = {"type": "equivariant", "equivariant": {"parity": "both"}}
    validate_config({**base, "model": {**base["model"], **equivariant}})


def test_invariant_models_refuse_pseudoscalar_couplings():
    with pytest.raises(ValueError, match="invariant under reflections"):
        BehlerParrinello(SPECIES, {"r_cut": CUTOFF}, [8], n_states=2, couplings="pseudoscalar")
    with pytest.raises(ValueError, match="parity = 'both'"):
        EquivariantPotential(SPECIES, cutoff=CUTOFF, channels=4, n_states=2, couplings="both")
    base = {"data": {"train": "x.xyz"}, "model": {"n_states": 2, "couplings": "both"}}
    with pytest.raises(ConfigError, match="ACSF descriptors are invariant under reflections"):
        validate_config(base)
    with pytest.raises(ConfigError, match="model.equivariant.parity: both"):
        validate_config({**base, "model": {**base["model"], "type": "equivariant"}})
    with pytest.raises(ConfigError, match="does not combine with model.heads"):
        validate_config({"data": {"train": "x.xyz"}, "model": {"n_states": 2, "heads": ["a", "b"]}})


@pytest.mark.parametrize("make", [_equivariant, _bpnn], ids=["equivariant", "bpnn"])
def test_diabatic_matrix_is_extensive(make, float64):
    ff = ForceField(make())
    one = _molecule(2)
    far = one.copy()
    far.translate((30.0, 0, 0))
    V1 = ff(_graph(one), forces=False)[keys.DIABATIC_MATRIX][0].detach()
    V2 = ff(_graph(one + far), forces=False)[keys.DIABATIC_MATRIX][0].detach()
    torch.testing.assert_close(V2, 2 * V1, atol=1e-10, rtol=1e-12)


def test_no_nan_at_an_exact_degeneracy_including_force_training_gradients(float64):
    model = _bpnn(n_states=2)
    with torch.no_grad():  # every network outputs zero: V_d = diag(e, e), exactly degenerate
        for net in model.nets:
            net[-1].weight.zero_()
            net[-1].bias.zero_()
    ff = ForceField(model)
    graph = _graph(_molecule(3))
    out = ff(graph, create_graph=True)
    E = out[keys.STATE_ENERGIES]
    assert float((E[0, 1] - E[0, 0]).detach()) == pytest.approx(2e-10, rel=1e-3)  # the gap is 2ε
    loss = (out[keys.STATE_FORCES] ** 2).sum() + (out[keys.STATE_COUPLINGS] ** 2).sum() + E.sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert all(bool(torch.isfinite(v).all()) for v in out.values() if v.is_floating_point())


@pytest.mark.parametrize("make", [_equivariant, _bpnn], ids=["equivariant", "bpnn"])
def test_model_file_round_trip(make, float64, tmp_path):
    model = make()
    copy = model_from_dict(model_to_dict(model))
    assert (
        copy.n_states == model.n_states
        and copy.couplings == model.couplings
        and copy.epsilon == model.epsilon
    )
    graph = _graph(_molecule(4))
    a, b = ForceField(model)(graph), ForceField(copy)(graph)
    for name in (keys.STATE_ENERGIES, keys.STATE_FORCES, keys.STATE_COUPLINGS):
        torch.testing.assert_close(a[name], b[name], atol=0, rtol=0)


# ------------------------------------------------------------------ training
def _teacher(atoms: Atoms) -> dict:
    """A two-state diabatic model of the geometry: harmonic bonds on both diagonals, the second
    1 eV higher and tilted along the C-N stretch, a coupling along the difference of two C-H bonds;
    returns adiabatic energies, forces and couplings (eV, eV/Å)."""
    pos = torch.tensor(atoms.positions, requires_grad=True)
    d = lambda i, j: torch.linalg.vector_norm(pos[i] - pos[j])  # noqa: E731
    bonds = (d(0, 1) - 1.3) ** 2 + (d(0, 2) - 1.08) ** 2 + (d(0, 3) - 1.08) ** 2 + (d(1, 4) - 1.0) ** 2
    bonds = 5.0 * (bonds + (d(1, 5) - 1.0) ** 2)
    v11 = bonds
    v22 = bonds + 1.0 - 4.0 * (d(0, 1) - 1.3)
    v12 = 0.8 * (d(0, 2) - d(0, 3))
    V = torch.stack([torch.stack([v11, v12]), torch.stack([v12, v22])])[None]
    E, _ = adiabatic_states(V)
    h, _ = derivative_couplings(V, pos)
    forces = -torch.diagonal(h, dim1=1, dim2=2).movedim(-1, 1)
    return {"E": E[0].detach().numpy(), "F": forces.detach().numpy(), "h": h[:, 0, 1].detach().numpy()}


def _write_data(path, n: int = 40, seed: int = 0, flip: bool = True) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = _molecule(seed * 1000 + k)
        labels = _teacher(atoms)
        sign = rng.choice([-1.0, 1.0]) if flip else 1.0  # the sign of a coupling label is arbitrary
        atoms.info["state_energies"] = labels["E"]
        atoms.arrays["state_forces"] = labels["F"].reshape(len(atoms), -1)
        atoms.arrays["state_couplings"] = sign * labels["h"]
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return frames


EXTRA = {
    "state_energies": "state_energies",
    "state_forces": "state_forces",
    "state_couplings": "state_couplings",
}


def _config(tmp_path, model: dict | None = None, training: dict | None = None) -> dict:
    return validate_config({
        "seed": 0, "output_dir": str(tmp_path / "run"), "dtype": "float64",
        "data": {"train": str(tmp_path / "train.xyz"), "valid_fraction": 0.2, "extra_labels": EXTRA},
        "model": {"cutoff": CUTOFF, "n_radial": 4, "n_angular_eta": 1, "hidden": [16], "n_states": 2,
                  **(model or {})},
        "training": {"epochs": 6, "batch_size": 4, "lr": 3e-3, **(training or {})},
    })  # fmt: skip


def test_training_on_state_labels_with_sign_free_couplings(tmp_path):
    _write_data(tmp_path / "train.xyz")
    lines = []
    trainer = Trainer(_config(tmp_path), log=lines.append)
    path = trainer.train()
    assert set(trainer.loss_fn.terms) == {"state_energies", "state_forces", "state_couplings"}
    sigma = trainer.loss_fn.terms["state_energies"].sigma
    assert isinstance(sigma, list) and len(sigma) == 2
    model = load_model(path)
    assert model.n_states == 2
    states = model.metadata["states"]
    assert (
        states["n_states"] == 2
        and "ascending" in states["order"]
        and len(states["sigma"]["state_forces"]) == 2
    )
    with open(tmp_path / "run" / "training_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[-1]["valid_loss"]) < 0.75 * float(rows[0]["valid_loss"])
    assert float(rows[-1]["valid_loss_state_couplings"]) < float(rows[0]["valid_loss_state_couplings"])
    report = json.loads((tmp_path / "run" / "training_summary.json").read_text())["valid_metrics"]
    assert len(report["state_energies_mae"]) == 2 and 0 <= report["state_couplings_cosine"] <= 1


def test_sign_free_coupling_loss_ignores_the_label_sign(float64):
    from nearsight.nonadiabatic.loss import StateCouplingsTerm

    term = StateCouplingsTerm([0.5])
    h = torch.randn(5, 1, 3)
    batch = {keys.N_ATOMS: torch.tensor([2, 3]), keys.BATCH: torch.tensor([0, 0, 1, 1, 1])}
    ref = torch.randn(5, 1, 3)
    flipped = ref.clone()
    flipped[2:] *= -1  # the second structure's label with the other sign
    a = term({keys.STATE_COUPLINGS: h}, {**batch, term.label_key: ref})
    b = term({keys.STATE_COUPLINGS: h}, {**batch, term.label_key: flipped})
    torch.testing.assert_close(a, b)
    exact = term({keys.STATE_COUPLINGS: -ref}, {**batch, term.label_key: ref})
    torch.testing.assert_close(exact, torch.zeros(2))


def test_coupling_direction_loss_is_the_sign_free_cosine_of_each_structure(float64):
    from nearsight.nonadiabatic.loss import StateCouplingDirectionsTerm, sign_free_cosine

    term = StateCouplingDirectionsTerm([0.5])
    batch = {keys.N_ATOMS: torch.tensor([2, 3]), keys.BATCH: torch.tensor([0, 0, 1, 1, 1])}
    h, ref = torch.randn(5, 1, 3), torch.randn(5, 1, 3)
    got = term({keys.STATE_COUPLINGS: h}, {**batch, term.label_key: ref})
    for g, atoms in enumerate((slice(0, 2), slice(2, 5))):
        cosine = sign_free_cosine(h[atoms].numpy(), ref[atoms].numpy())
        assert float(got[g]) == pytest.approx(2 * (1 - cosine) / 0.5**2, rel=1e-10)
    # the size of either vector and the sign of each label do not matter
    flipped = ref.clone()
    flipped[2:] *= -1
    scaled = term({keys.STATE_COUPLINGS: 7.0 * h}, {**batch, term.label_key: 1e-3 * flipped})
    torch.testing.assert_close(scaled, got)
    exact = term({keys.STATE_COUPLINGS: -3.0 * ref}, {**batch, term.label_key: ref})
    torch.testing.assert_close(exact, torch.zeros(2), atol=1e-12, rtol=0)
    # a zero label contributes nothing, and a zero prediction gives a finite gradient
    zero = ref.clone()
    zero[:2] = 0.0
    h0 = torch.zeros(5, 1, 3, requires_grad=True)
    loss = term({keys.STATE_COUPLINGS: h0}, {**batch, term.label_key: zero})
    assert float(loss[0].detach()) == 0.0 and float(loss[1].detach()) == pytest.approx(2 / 0.5**2)
    loss.sum().backward()
    assert torch.isfinite(h0.grad).all()


def test_training_with_the_coupling_direction_term(tmp_path):
    _write_data(tmp_path / "train.xyz")
    loss = {"state_energies": {}, "state_forces": {}, "state_coupling_directions": {"weight": 1.0}}
    trainer = Trainer(_config(tmp_path, training={"loss": loss}), log=lambda m: None)
    path = trainer.train()
    assert trainer.loss_fn.terms["state_coupling_directions"].sigma == [1.0]
    with open(tmp_path / "run" / "training_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    first, last = (float(r["valid_loss_state_coupling_directions"]) for r in (rows[0], rows[-1]))
    assert 0 <= last < first <= 2
    assert load_model(path).metadata["states"]["sigma"]["state_coupling_directions"] == [1.0]


def test_bad_state_labels_are_named(tmp_path):
    frames = _write_data(tmp_path / "train.xyz", n=6)
    frames[3].info["state_energies"] = np.append(frames[3].info["state_energies"], 9.0)
    write(tmp_path / "train.xyz", frames, format="extxyz")
    with pytest.raises(
        ValueError,
        match=r"frame 3: label 'state_energies' has trailing shape \(3,\), but earlier frames have \(2,\)",
    ):
        Trainer(_config(tmp_path), log=lambda m: None).setup()
    frames = _write_data(tmp_path / "train.xyz", n=6)
    write(tmp_path / "train.xyz", frames, format="extxyz")
    with pytest.raises(ValueError, match="state_energies has 2 state.*n_states = 3"):
        Trainer(_config(tmp_path, {"n_states": 3}), log=lambda m: None).setup()
    del frames[2].info["state_energies"]
    write(tmp_path / "train.xyz", frames, format="extxyz")
    with pytest.raises(
        ValueError, match="frame 2: a state_couplings label needs the energies of both states"
    ):
        Trainer(_config(tmp_path), log=lambda m: None).setup()
    frames = _write_data(tmp_path / "train.xyz", n=6)
    frames[1].info["state_energies"] = frames[1].info["state_energies"][::-1].copy()
    write(tmp_path / "train.xyz", frames, format="extxyz")
    with pytest.raises(ValueError, match="frame 1.*not in ascending order"):
        Trainer(_config(tmp_path), log=lambda m: None).setup()
