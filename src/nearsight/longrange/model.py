"""One total energy: a short-range model plus the long-range terms, summed per atom in one place.

    ε_i = ε_i^short + ε_i^Coulomb + ε_i^D3,    ε_i^Coulomb = ½ q_i V_i,    μ = Σ_i q_i R_i

The short-range model (Behler-Parrinello or equivariant, built with a charge head when there is a
Coulomb term) gives ε^short and the charges q_i (conserved per structure,
:mod:`nearsight.models.charges`); :class:`~nearsight.longrange.Coulomb` turns the charges into
electrostatic energies (direct sum, Ewald or PME), :class:`~nearsight.longrange.Dispersion` adds
D3(BJ).  The model returns the total per-atom energies under ``keys.ATOMIC_ENERGIES``, so
:class:`~nearsight.models.forcefield.ForceField` gives forces, virial and stress of the total
through its one strain path, and each term under its own key (summed per structure by
``ForceField``: ``short_range_energy``, ``coulomb_energy``, ``dispersion_energy``), with the
charges and the dipole μ.  The dipole is taken about the origin of the coordinates: for neutral
structures it does not depend on the origin, for charged ones it does.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import keys
from .coulomb import Coulomb
from .dispersion import Dispersion

SHORT_RANGE_ENERGIES = keys.declare("short_range_energies", "atom", (), "eV", sum_to="short_range_energy")
COULOMB_ENERGIES = keys.declare("coulomb_energies", "atom", (), "eV", sum_to="coulomb_energy")
DISPERSION_ENERGIES = keys.declare("dispersion_energies", "atom", (), "eV", sum_to="dispersion_energy")
for _total in ("short_range_energy", "coulomb_energy", "dispersion_energy"):
    keys.declare(_total, "graph", (), "eV")


class LongRangePotential(nn.Module):
    """A short-range model with Coulomb (of its charges) and/or D3 dispersion on top.

    ``coulomb`` and ``dispersion`` are the keyword arguments of :class:`Coulomb` and
    :class:`Dispersion` (``None``: no such term).  With a Coulomb term the short-range model must
    return ``keys.CHARGES`` (built with ``charges=True``).
    """

    model_type = "longrange"

    def __init__(self, short: nn.Module, coulomb: dict | None = None, dispersion: dict | None = None) -> None:
        super().__init__()
        if coulomb is None and dispersion is None:
            raise ValueError("a long-range model needs a coulomb and/or a dispersion term")
        if coulomb is not None and not getattr(short, "get_config", lambda: {})().get("charges"):
            raise ValueError(
                f"a Coulomb term needs charges: build the {getattr(short, 'model_type', 'short-range')} "
                "model with charges=True (model.longrange.charges: true in a config)"
            )
        self.short = short
        self.coulomb_config = dict(coulomb) if coulomb is not None else None
        self.dispersion_config = dict(dispersion) if dispersion is not None else None
        self.coulomb = Coulomb(**self.coulomb_config) if coulomb is not None else None
        self.dispersion = Dispersion(**self.dispersion_config) if dispersion is not None else None
        self.species = list(short.species)
        self.cutoff = float(short.cutoff)  # the neighbour list of the short-range model

    # ---------------------------------------------------------------- config
    def get_config(self) -> dict:
        return {
            "short": {"model_type": self.short.model_type, "config": self.short.get_config()},
            "coulomb": self.coulomb_config,
            "dispersion": self.dispersion_config,
        }

    @classmethod
    def from_config(cls, config: dict) -> LongRangePotential:
        from ..models.io import model_class

        short = config["short"]
        kind = short.get("model_type")
        if kind == cls.model_type or model_class(kind) is None:
            raise ValueError(f"long-range model: unknown short-range model type {kind!r}")
        return cls(
            model_class(kind).from_config(short["config"]), config.get("coulomb"), config.get("dispersion")
        )

    @property
    def OPTIONAL_BUFFERS(self) -> tuple[str, ...]:  # noqa: N802 - the name model files look up
        return tuple(f"short.{name}" for name in getattr(self.short, "OPTIONAL_BUFFERS", ()))

    @property
    def heads(self) -> list[str]:
        return list(getattr(self.short, "heads", []))

    # ---------------------------------------------------------------- forward
    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(self.short(graph))
        short = out[keys.ATOMIC_ENERGIES]  # [n_atoms]
        total = short
        out[SHORT_RANGE_ENERGIES] = short
        if keys.CHARGES in out:
            q = out[keys.CHARGES]
            n_graphs = graph[keys.N_ATOMS].shape[0]
            dipole = torch.zeros((n_graphs, 3), dtype=q.dtype, device=q.device)
            out[keys.DIPOLE] = dipole.index_add(0, graph[keys.BATCH], q[:, None] * graph[keys.POSITIONS])
        if self.coulomb is not None:
            out[COULOMB_ENERGIES] = self.coulomb(graph, out[keys.CHARGES])
            total = total + out[COULOMB_ENERGIES]
        if self.dispersion is not None:
            out[DISPERSION_ENERGIES] = self.dispersion(graph)
            total = total + out[DISPERSION_ENERGIES]
        out[keys.ATOMIC_ENERGIES] = total
        return out
