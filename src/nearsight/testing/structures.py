"""Structures for checking a model: read from files, or built from its elements.

:func:`default_structures` makes a compact random molecule of a model's elements (bonds of about the
sum of covalent radii, no two atoms closer than :data:`MIN_DISTANCE_A`) and a small triclinic
periodic cell of them; :func:`read_structures` reads frames of any ASE format with errors naming
the file and frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

MIN_DISTANCE_A = 0.9  # Å, closest approach of two atoms in the structures built without STRUCTURES


def _covalent(z: int) -> float:
    from ase.data import covalent_radii

    return float(covalent_radii[z])


def _composition(species: Sequence[int], n_atoms: int, rng) -> list[int]:
    """Every element once, the rest drawn at random (heavier elements first: a connected cluster)."""
    numbers = sorted(species, reverse=True)
    numbers += rng.choice(sorted(species), size=max(0, n_atoms - len(numbers))).tolist()
    return [int(z) for z in numbers]


def _grow(numbers: Sequence[int], rng, positions=None, fits=None):
    """Positions of a compact cluster: each atom bonded (1.0-1.2 × the covalent radii, at least
    0.9 Å) to a random earlier one, no closer than 0.9 Å (0.85 × covalent radii) to any other."""
    import numpy as np

    pos: list = [np.zeros(3)]
    for k, z in enumerate(numbers[1:], start=1):
        for _ in range(2000):
            j = int(rng.integers(k))
            d = rng.standard_normal(3)
            bond = max(MIN_DISTANCE_A, (_covalent(z) + _covalent(numbers[j])) * rng.uniform(1.0, 1.2))
            x = pos[j] + bond * d / np.linalg.norm(d)
            close = [max(MIN_DISTANCE_A, 0.85 * (_covalent(z) + _covalent(numbers[i]))) for i in range(k)]
            if all(np.linalg.norm(x - pos[i]) >= close[i] for i in range(k)):
                pos.append(x)
                break
        else:  # pragma: no cover - 2000 failures in a row do not happen for small clusters
            raise RuntimeError("could not place an atom of the random molecule")
    return np.array(pos)


def default_structures(species: Sequence[int], seed: int = 0) -> list:
    """A random compact molecule (2 atoms per element, at least 6) and a small triclinic periodic
    cell (2 atoms per element, at least 4) of the model's elements, deterministic in ``seed``."""
    import numpy as np
    from ase import Atoms
    from ase.geometry import get_distances

    if not species:
        raise ValueError("the model lists no species: give STRUCTURES to check it on")
    rng = np.random.default_rng(seed)
    numbers = _composition(species, max(6, 2 * len(species)), rng)
    molecule = Atoms(numbers=numbers, positions=_grow(numbers, rng))
    molecule.positions -= molecule.get_center_of_mass()
    molecule.info["label"] = "random_molecule"

    numbers = _composition(species, max(4, 2 * len(species)), rng)
    positions = _grow(numbers, rng)
    positions -= positions.min(axis=0)
    shear = np.eye(3) + rng.uniform(-0.1, 0.1, (3, 3)) * (1 - np.eye(3))
    mean_bond = float(np.mean([_covalent(z) for z in numbers])) * 2.2
    for gap in mean_bond * (1.0 + 0.1 * np.arange(50)):
        lengths = positions.max(axis=0) - positions.min(axis=0) + gap
        cell = shear * lengths[:, None]
        crystal = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
        crystal.wrap()
        _, dist = get_distances(crystal.positions, cell=cell, pbc=True)
        dist[np.diag_indices_from(dist)] = np.inf
        lattice = min(np.linalg.norm(cell, axis=1))
        if dist.min() >= MIN_DISTANCE_A and lattice >= 2.0:
            break
    crystal.info["label"] = "random_cell"
    return [molecule, crystal]


def read_structures(paths: Sequence[str], index: str = ":") -> list:
    """Frames of ``paths`` (``index``: an ASE index string), each with ``info['label']`` FILE:FRAME."""
    import ase.io
    from ase.io.formats import string2index

    try:
        selected = string2index(str(index))
    except ValueError:
        selected = None
    if not isinstance(selected, (int, slice)):
        raise ValueError(f"--index {index!r}: not a frame number or slice such as 0, -1, 0:10 or :")
    frames = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"structure file {path!r} does not exist")
        try:
            got = ase.io.read(path, index=":" if isinstance(selected, slice) else selected)
        except (IndexError, StopIteration):  # ASE's extxyz reader ends with StopIteration
            raise ValueError(f"{path!r} has no frame {index!r} (--index)") from None
        except Exception as exc:  # noqa: BLE001 - re-raised naming the file
            raise ValueError(f"cannot read {path!r} (index {index!r}) as structures: {exc}") from exc
        if isinstance(selected, slice):
            numbers = list(range(len(got)))[selected]
            got = [got[k] for k in numbers]
        else:
            numbers, got = [selected], [got]
        for k, atoms in zip(numbers, got):
            atoms.info["label"] = f"{Path(path).name}:{k}"
            frames.append(atoms)
    if not frames:
        raise ValueError(f"no frames selected by --index {index!r} in {list(paths)}")
    return frames
