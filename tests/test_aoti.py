"""Compiled packages (torch.export + AOTInductor, nearsight.models.aoti) equal the ASE calculator for
every model type, periodic (triclinic, smaller than the interaction range) and not; with ghost atoms
and a mask they give the periodic result exactly, the way LAMMPS uses them."""

from __future__ import annotations

import itertools
import zipfile

import numpy as np
import pytest
import torch
from ase import Atoms

from aoti_models import KINDS, water_model
from nearsight import keys
from nearsight.calculator import NearsightCalculator
from nearsight.data.neighbours import atoms_to_graph
from nearsight.models.aoti import (
    check_runnable,
    export_package,
    graph_inputs,
    layer_centres_of,
    load_package,
    missing_cpu_flags,
    read_metadata,
)
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.io import load_model
from structures import water_box

pytestmark = [pytest.mark.xdist_group("aoti"), pytest.mark.filterwarnings("ignore:the model extrapolates")]


def triclinic_water() -> Atoms:
    atoms = water_box(2, seed=3)
    L = atoms.cell[0, 0]
    atoms.set_cell([[L, 0, 0], [0.3 * L, 0.95 * L, 0], [-0.2 * L, 0.25 * L, 1.05 * L]], scale_atoms=True)
    return atoms


def small_cell() -> Atoms:
    """One water molecule in a triclinic cell of 3.1-3.4 Å edges: many images of every neighbour."""
    return Atoms(
        "OH2",
        positions=[[0.0, 0.0, 0.0], [0.76, 0.59, 0.0], [-0.76, 0.59, 0.05]],
        cell=[[3.1, 0.0, 0.0], [0.6, 3.2, 0.0], [0.3, -0.4, 3.3]],
        pbc=True,
    )


def cluster() -> Atoms:
    atoms = water_box(2, seed=5)
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    return atoms


def run(potential, atoms: Atoms, mask=None, by_hops: bool = False):
    """The package's outputs; ``by_hops``: as the LAMMPS plugin calls a message-passing package, each
    layer updating only atoms within layers − 1 − t hops of a masked one, edges only around those."""
    g = atoms_to_graph(atoms, potential.cutoff, potential.dtype)
    args = graph_inputs(g, potential.dtype, None if mask is None else torch.as_tensor(mask))
    if by_hops:
        centres = layer_centres_of(args[3], args[5], potential.interaction_layers)
        keep = torch.isin(args[3][0], centres[0])
        args = (*args[:3], args[3][:, keep], args[4][keep], args[5], *centres)
    return [t.double().numpy() for t in potential(*args)]


def reference(model_path, atoms: Atoms):
    atoms = atoms.copy()
    atoms.calc = NearsightCalculator(str(model_path))
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    virial = -atoms.get_stress(voigt=False) * atoms.get_volume() if atoms.pbc.all() else None
    return energy, forces, virial


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("structure", [triclinic_water, small_cell, cluster])
def test_package_equals_calculator(aoti_package, kind, structure):
    model_path, package = aoti_package(kind)
    potential = load_package(package)
    atoms = structure()
    e_i, forces, virial, w_i = run(potential, atoms)
    energy, ref_forces, ref_virial = reference(model_path, atoms)
    assert abs(e_i.sum() - energy) < 1e-10 * max(1.0, len(atoms))
    np.testing.assert_allclose(forces, ref_forces, atol=1e-10, rtol=0)
    if ref_virial is not None:
        np.testing.assert_allclose(virial, ref_virial, atol=1e-10, rtol=0)
    np.testing.assert_allclose(w_i.sum(0), virial, atol=1e-10, rtol=0)
    assert np.abs(forces).max() > 1e-3  # the comparison is not of zeros


def test_large_neighbour_list(aoti_package):
    """More than 32 767 edges, also within the angular cutoff (inductor's default sort works on int16
    indices and, compiled for dynamic sizes, assumes fewer)."""
    model_path, package = aoti_package("acsf")
    atoms = water_box(10, seed=1)  # 3000 atoms
    angular = atoms_to_graph(atoms, 3.5)[keys.EDGE_INDEX].shape[1]
    assert angular > 40000
    e_i, forces, _, _ = run(load_package(package), atoms)
    energy, ref_forces, _ = reference(model_path, atoms)
    assert abs(e_i.sum() - energy) / len(atoms) < 1e-10
    np.testing.assert_allclose(forces, ref_forces, atol=1e-10, rtol=0)


def with_ghosts(atoms: Atoms, shell: float) -> tuple[Atoms, np.ndarray]:
    """The cell's atoms and every periodic image within ``shell`` Å of one of them, as a cluster;
    ``owner[k]`` is the cell atom that atom k images (the first len(atoms) are the atoms)."""
    pos, cell = atoms.positions, np.asarray(atoms.cell)
    reach = int(np.ceil(shell / min(np.linalg.norm(cell, axis=1)))) + 1
    images, owners = [pos], [np.arange(len(atoms))]
    for shift in itertools.product(range(-reach, reach + 1), repeat=3):
        if shift == (0, 0, 0):
            continue
        moved = pos + np.array(shift) @ cell
        d = np.linalg.norm(moved[:, None, :] - pos[None, :, :], axis=-1).min(1)
        keep = d < shell
        images.append(moved[keep])
        owners.append(np.flatnonzero(keep))
    owner = np.concatenate(owners)
    ghosts = Atoms(numbers=atoms.numbers[owner], positions=np.concatenate(images), pbc=False)
    return ghosts, owner


@pytest.mark.parametrize("kind", ["acsf", "equivariant", "equivariant1"])
def test_owned_atoms_with_ghosts_give_the_periodic_result(aoti_package, kind):
    """LAMMPS's view of a periodic cell: owned atoms, ghosts out to interaction_layers × cutoff, only
    owned energies counted and ghost forces summed onto their owners, with every atom updated or (as
    the plugin does) each layer only within reach of the owned atoms; a ghost shell one cutoff thick
    is too thin for a two-layer model (the negative control)."""
    model_path, package = aoti_package(kind)
    potential = load_package(package)
    atoms = triclinic_water()
    energy, ref_forces, ref_virial = reference(model_path, atoms)
    n = len(atoms)
    layers = potential.interaction_layers
    assert layers == (2 if kind == "equivariant" else 1)
    message_passing = kind.startswith("equivariant")  # takes layer_centres, one layer or two
    for thickness, exact, by_hops in [
        (layers, True, False),
        (layers, True, message_passing),
        (1, layers == 1, False),
    ]:
        ghosts, owner = with_ghosts(atoms, thickness * potential.cutoff + 0.01)
        mask = np.arange(len(ghosts)) < n
        e_i, forces, virial, _ = run(potential, ghosts, mask, by_hops)
        folded = np.zeros((n, 3))
        np.add.at(folded, owner, forces)
        errors = (
            abs(e_i[mask].sum() - energy),
            np.abs(folded - ref_forces).max(),
            np.abs(virial - ref_virial).max(),
        )
        if exact:
            assert max(errors) < 1e-10, (thickness, errors)
        else:
            assert min(errors[:2]) > 1e-6, (thickness, errors)


def test_optimised_message_passing_package(aoti_package, tmp_path):
    """The vectorised code of an optimised package (the other tests compile scalar code, sooner), with
    layers of several chunks: the periodic result, and LAMMPS's view by hops, to 1e-10."""
    model_path, _ = aoti_package("equivariant")
    package = export_package(
        load_model(model_path), tmp_path / "optimised.pt2", optimise=True, chunk_atoms=24
    )
    potential = load_package(package)
    assert potential.metadata["chunk_atoms"] == "24"
    atoms = triclinic_water()
    energy, ref_forces, ref_virial = reference(model_path, atoms)
    e_i, forces, virial, _ = run(potential, atoms)
    assert abs(e_i.sum() - energy) < 1e-10 * len(atoms)
    np.testing.assert_allclose(forces, ref_forces, atol=1e-10, rtol=0)
    np.testing.assert_allclose(virial, ref_virial, atol=1e-10, rtol=0)
    ghosts, owner = with_ghosts(atoms, 2 * potential.cutoff + 0.01)
    mask = np.arange(len(ghosts)) < len(atoms)
    g = atoms_to_graph(ghosts, potential.cutoff)
    centres = layer_centres_of(g[keys.EDGE_INDEX], torch.as_tensor(mask), 2)
    assert len(centres[0]) > 3 * int(potential.metadata["chunk_atoms"])  # several chunks, padded last
    e_i, forces, virial, _ = run(potential, ghosts, mask, by_hops=True)
    folded = np.zeros((len(atoms), 3))
    np.add.at(folded, owner, forces)
    assert abs(e_i[mask].sum() - energy) < 1e-10 * len(atoms)
    np.testing.assert_allclose(folded, ref_forces, atol=1e-10, rtol=0)
    np.testing.assert_allclose(virial, ref_virial, atol=1e-10, rtol=0)


def test_float32_package(aoti_package):
    model_path, package = aoti_package("acsf", "float32")
    potential = load_package(package)
    assert potential.dtype == torch.float32 and potential.metadata["dtype"] == "float32"
    atoms = triclinic_water()
    e_i, forces, virial, _ = run(potential, atoms)
    energy, ref_forces, ref_virial = reference(model_path, atoms)
    assert abs(e_i.sum() - energy) / len(atoms) < 1e-5
    assert np.abs(forces - ref_forces).max() < 1e-4
    assert np.abs(virial - ref_virial).max() < 1e-3


def test_metadata_and_refusals(aoti_package, tmp_path):
    _, package = aoti_package("equivariant")
    meta = read_metadata(package)
    assert meta["species"] == "1 8" and float(meta["cutoff"]) == 3.5 and meta["interaction_layers"] == "2"
    assert meta["units"] == "metal" and meta["torch_version"] == torch.__version__
    base = "positions,species,cell,edge_index,shifts,mask,neighbour_slots"
    # one of each per message-passing layer: the atoms it updates, and how many chunks they take
    assert meta["inputs"] == base + ",layer_centres_0,layer_centres_1,layer_chunks_0,layer_chunks_1"
    assert meta["format"] == "nearsight-aoti-4"
    assert 8 <= int(meta["chunk_atoms"]) <= 256 and meta["kernel_threads"] == "1"
    potential = load_package(package)
    atoms = small_cell()
    atoms.numbers[0] = 6
    with pytest.raises(ValueError, match=r"\['C'\] not known to the model"):
        run(potential, atoms)
    with pytest.raises(
        TypeError, match="takes the inputs positions, species, cell, edge_index, shifts, mask"
    ):
        potential(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="compiled by torch 1.0"):
        check_runnable({**meta, "torch_version": "1.0"}, "x.pt2")
    assert missing_cpu_flags("-mavx512f -mnotaflag") in (["notaflag"], ["avx512f", "notaflag"])
    with pytest.raises(ValueError, match="notaflag missing on this one"):
        check_runnable({**meta, "cpu_flags": "-mnotaflag", "cpu_isa": "avx512"}, "x.pt2")
    bad = tmp_path / "bad.pt2"
    bad.write_text("not a zip")
    with pytest.raises(ValueError, match="bad.pt2: not an AOTInductor package"):
        load_package(bad)
    with zipfile.ZipFile(tmp_path / "other.pt2", "w") as z:
        z.writestr("x/data/aotinductor/model/a_metadata.json", '{"format": "other"}')
    with pytest.raises(ValueError, match="not a nearsight package"):
        read_metadata(tmp_path / "other.pt2")
    with pytest.raises(FileNotFoundError, match="missing.pt2"):
        load_package(tmp_path / "missing.pt2")


def test_export_refusals(tmp_path):
    from nearsight.longrange.model import LongRangePotential

    model = water_model("acsf")
    with pytest.raises(ValueError, match="must end in .pt2"):
        export_package(model, tmp_path / "model.so")
    with pytest.raises(ValueError, match="float64 or float32"):
        export_package(model, tmp_path / "model.pt2", dtype=torch.float16)
    with pytest.raises(ValueError, match="threads = 0 must be at least 1"):
        export_package(model, tmp_path / "model.pt2", threads=0)
    with pytest.raises(ValueError, match="chunk_atoms = 64 needs a message-passing model"):
        export_package(model, tmp_path / "model.pt2", chunk_atoms=64)
    diabatic = BehlerParrinello([1, 8], {"r_cut": 4.0}, hidden=(4,), n_states=2)
    with pytest.raises(ValueError, match="n_states = 2"):
        export_package(diabatic, tmp_path / "model.pt2")
    longrange = LongRangePotential(model, dispersion={"functional": "pbe"})
    with pytest.raises(ValueError, match=r"long-range terms \(dispersion\)"):
        export_package(longrange, tmp_path / "model.pt2")
    assert not list(tmp_path.iterdir())
