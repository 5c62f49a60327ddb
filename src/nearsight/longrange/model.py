"""One total energy: a short-range model plus the long-range terms, summed per atom in one place.

    ε_i = ε_i^short + ε_i^Coulomb + ε_i^field + ε_i^D3 + ε_i^ZBL,    ε_i^Coulomb = ½ q_i V_i,
    ε_i^field = −q_i R_i·E,    μ = Σ_i q_i R_i

The short-range model (Behler-Parrinello or equivariant, built with a charge head when there is a
Coulomb term) gives ε^short and the output of its charge head (conserved per structure,
:mod:`nearsight.models.charges`).  With ``charges="head"`` those are the charges q_i, point
charges or Gaussians (``coulomb.widths``); with ``charges="qeq"`` they are electronegativities
and :class:`~nearsight.longrange.qeq.ChargeEquilibration` finds the charges (Gaussians, global:
every charge responds to every atom and to the field), reported under ``keys.CHARGES`` and
``electronegativities``.  :class:`~nearsight.longrange.Coulomb` turns the charges into
electrostatic energies (direct sum, Ewald or PME), :class:`~nearsight.longrange.Dispersion` adds
D3(BJ), :class:`~nearsight.longrange.repulsion.ZBLRepulsion` a nuclear-repulsion wall (``repulsion``,
within the covalent radii: a floor under the short-range model).  An external field E (``keys.EXTERNAL_FIELD``, V/Å per structure, zero when absent) adds
−μ·E (``field_energy``); positions enter as given, so in periodic cells the field energy is that
of the unwrapped positions (continuous along a trajectory that is not wrapped back into the cell).  The model returns the total per-atom energies under ``keys.ATOMIC_ENERGIES``, so
:class:`~nearsight.models.forcefield.ForceField` gives forces, virial and stress of the total
through its one strain path, and each term under its own key (summed per structure by
``ForceField``: ``short_range_energy``, ``coulomb_energy``, ``field_energy``, ``dispersion_energy``,
``repulsion_energy``), with the
charges and the dipole μ.  The dipole is taken about the origin of the coordinates: for neutral
structures it does not depend on the origin, for charged ones it does.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import keys
from .coulomb import Coulomb
from .dispersion import Dispersion
from .qeq import ELECTRONEGATIVITIES, ChargeEquilibration
from .repulsion import ZBLRepulsion, check_range

SHORT_RANGE_ENERGIES = keys.declare("short_range_energies", "atom", (), "eV", sum_to="short_range_energy")
COULOMB_ENERGIES = keys.declare("coulomb_energies", "atom", (), "eV", sum_to="coulomb_energy")
DISPERSION_ENERGIES = keys.declare("dispersion_energies", "atom", (), "eV", sum_to="dispersion_energy")
REPULSION_ENERGIES = keys.declare("repulsion_energies", "atom", (), "eV", sum_to="repulsion_energy")
FIELD_ENERGIES = keys.declare("field_energies", "atom", (), "eV", sum_to="field_energy")  # −q_i R_i·E
ENERGY_TERMS = (
    "short_range_energy",
    "coulomb_energy",
    "field_energy",
    "dispersion_energy",
    "repulsion_energy",
)
CHARGE_MODELS = ("head", "qeq")
for _total in ENERGY_TERMS:
    keys.declare(_total, "graph", (), "eV")


class LongRangePotential(nn.Module):
    """A short-range model with Coulomb (of its charges) and/or D3 dispersion on top.

    ``coulomb`` and ``dispersion`` are the keyword arguments of :class:`Coulomb` and
    :class:`Dispersion` (``None``: no such term).  With a Coulomb term the short-range model must
    return ``keys.CHARGES`` (built with ``charges=True``).  ``charges``: ``"head"`` (the head's
    charges are the charges) or ``"qeq"`` (charge equilibration on the head's electronegativities,
    ``qeq`` holding the keyword arguments of :class:`ChargeEquilibration` beyond species and Coulomb).
    """

    model_type = "longrange"

    def __init__(
        self,
        short: nn.Module,
        coulomb: dict | None = None,
        dispersion: dict | None = None,
        charges: str = "head",
        qeq: dict | None = None,
        repulsion: dict | None = None,
    ) -> None:
        super().__init__()
        if coulomb is None and dispersion is None and repulsion is None:
            raise ValueError("a long-range model needs a coulomb, dispersion and/or repulsion term")
        if charges not in CHARGE_MODELS:
            raise ValueError(f"charges = {charges!r} must be one of {CHARGE_MODELS}")
        if charges == "qeq" and coulomb is None:
            raise ValueError(
                "charges: qeq needs a coulomb term (it defines the electrostatics QEq minimises)"
            )
        if qeq is not None and charges != "qeq":
            raise ValueError("qeq options are given but charges is not 'qeq'")
        if coulomb is not None and not getattr(short, "get_config", lambda: {})().get("charges"):
            raise ValueError(
                f"a Coulomb term needs charges: build the {getattr(short, 'model_type', 'short-range')} "
                "model with charges=True (a config with model.longrange.coulomb does so)"
            )
        self.short = short
        self.coulomb_config = dict(coulomb) if coulomb is not None else None
        self.dispersion_config = dict(dispersion) if dispersion is not None else None
        self.charge_model = charges
        self.qeq_config = dict(qeq or {}) if charges == "qeq" else None
        self.coulomb = Coulomb(**self.coulomb_config) if coulomb is not None else None
        self.dispersion = Dispersion(**self.dispersion_config) if dispersion is not None else None
        self.qeq = (
            ChargeEquilibration(short.species, self.coulomb, **self.qeq_config) if charges == "qeq" else None
        )
        self.species = list(short.species)
        self.cutoff = float(short.cutoff)  # the neighbour list of the short-range model
        self.repulsion_config = dict(repulsion) if repulsion is not None else None
        self.repulsion = ZBLRepulsion(**self.repulsion_config) if repulsion is not None else None
        if self.repulsion is not None:
            check_range(self.repulsion, self.species, self.cutoff)

    # ---------------------------------------------------------------- config
    def get_config(self) -> dict:
        return {
            "short": {"model_type": self.short.model_type, "config": self.short.get_config()},
            "coulomb": self.coulomb_config,
            "dispersion": self.dispersion_config,
            "charges": self.charge_model,
            "qeq": self.qeq_config,
            **({"repulsion": self.repulsion_config} if self.repulsion_config is not None else {}),
        }

    @classmethod
    def from_config(cls, config: dict) -> LongRangePotential:
        from ..models.io import model_class

        short = config["short"]
        kind = short.get("model_type")
        if kind == cls.model_type or model_class(kind) is None:
            raise ValueError(f"long-range model: unknown short-range model type {kind!r}")
        return cls(
            model_class(kind).from_config(short["config"]),
            config.get("coulomb"),
            config.get("dispersion"),
            config.get("charges", "head"),  # files before QEq: head charges
            config.get("qeq"),
            config.get("repulsion"),  # files before it: none
        )

    def with_dispersion(self, dispersion: dict | None) -> LongRangePotential:
        """This model with the D3 term of ``dispersion`` (None: without D3), sharing every other module
        (short range, charges, QEq, repulsion) and so their current weights."""
        new = copy.copy(self)
        new._modules = dict(self._modules)  # a shallow copy would share the module table itself
        new.dispersion_config = dict(dispersion) if dispersion is not None else None
        new.dispersion = Dispersion(**new.dispersion_config) if dispersion is not None else None
        if new.coulomb is None and new.dispersion is None and new.repulsion is None:
            raise ValueError("a long-range model needs a coulomb, dispersion and/or repulsion term")
        return new

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
        if self.qeq is not None:
            q, out[COULOMB_ENERGIES], out[ELECTRONEGATIVITIES] = self.qeq(graph, out[keys.CHARGES])
            out[keys.CHARGES] = q
            total = total + out[COULOMB_ENERGIES]
        elif self.coulomb is not None:
            out[COULOMB_ENERGIES] = self.coulomb(graph, out[keys.CHARGES])
            total = total + out[COULOMB_ENERGIES]
        if keys.CHARGES in out:
            q = out[keys.CHARGES]  # [n_atoms]
            moments = q[:, None] * graph[keys.POSITIONS]  # [n_atoms, 3], q_i R_i
            n_graphs = graph[keys.N_ATOMS].shape[0]
            dipole = torch.zeros((n_graphs, 3), dtype=q.dtype, device=q.device)
            out[keys.DIPOLE] = dipole.index_add(0, graph[keys.BATCH], moments)
            if keys.EXTERNAL_FIELD in graph:
                field = graph[keys.EXTERNAL_FIELD].to(q.dtype)[graph[keys.BATCH]]  # [n_atoms, 3]
                out[FIELD_ENERGIES] = -(moments * field).sum(1)
                total = total + out[FIELD_ENERGIES]
        if self.dispersion is not None:
            out[DISPERSION_ENERGIES] = self.dispersion(graph)
            total = total + out[DISPERSION_ENERGIES]
        if self.repulsion is not None:
            out[REPULSION_ENERGIES] = self.repulsion(graph)
            total = total + out[REPULSION_ENERGIES]
        out[keys.ATOMIC_ENERGIES] = total
        return out
