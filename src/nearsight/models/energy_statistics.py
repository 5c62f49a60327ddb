"""The training-set statistics a message-passing potential keeps as buffers: per-element energy
shift e_Z and scale s_Z (eV), the mean neighbour count N̄ that normalises its sums over neighbours,
and the isolated-atom energies E0_Z (:mod:`nearsight.models.reference`).

:class:`EnergyStatistics` is a mixin: the model registers the buffers ``energy_shift``,
``energy_scale`` ``[n_elements]``, ``avg_num_neighbours``, ``isolated_energy`` and
``isolated_reference`` (0-d, 1 when E0_Z is on) and the sorted list ``species``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import keys


class EnergyStatistics:
    """Setters of the per-element energy statistics and N̄ (see the module docstring)."""

    def set_statistics(
        self,
        energy_shift: dict[int, float],
        energy_scale: float | dict[int, float],
        avg_num_neighbours: float,
    ) -> None:
        """Per-element shift/scale of atomic energies (eV) and the mean neighbour count N̄."""
        if not avg_num_neighbours > 0:
            raise ValueError(f"avg_num_neighbours = {avg_num_neighbours!r} must be positive")
        self.set_energy_shift(energy_shift)
        with torch.no_grad():
            if isinstance(energy_scale, dict):
                for z, s in energy_scale.items():
                    if int(z) in self.species:
                        self.energy_scale[self.species.index(int(z))] = float(s)
            else:
                self.energy_scale.fill_(float(energy_scale))
            self.avg_num_neighbours.fill_(float(avg_num_neighbours))

    @torch.no_grad()
    def set_energy_shift(self, energy_shift: dict[int, float]) -> None:
        """Per-element energies e_Z (eV, ``{Z: e}``): refitted when fine-tuning on another level."""
        for z, e in energy_shift.items():
            if int(z) in self.species:
                self.energy_shift[self.species.index(int(z))] = float(e)

    @torch.no_grad()
    def set_isolated_energy(self, isolated_energy: dict[int, float]) -> None:
        """E0_Z, the energy of an isolated atom (eV, ``{Z: e}``): from now on a lone atom has
        exactly this energy (:mod:`nearsight.models.reference`)."""
        for z, e in isolated_energy.items():
            if int(z) in self.species:
                self.isolated_energy[self.species.index(int(z))] = float(e)
        self.isolated_reference.fill_(1.0)

    def fit_statistics(
        self,
        graphs: Sequence[dict],
        energy_shift: dict[int, float],
        energy_scale: float,
        isolated_energy: dict[int, float] | None = None,
    ) -> None:
        """Mean neighbour count of ``graphs`` plus the given energy shift and scale; with
        ``isolated_energy`` (E0_Z), the isolated-atom reference."""
        n_edges = sum(int(g[keys.EDGE_INDEX].shape[1]) for g in graphs)
        n_atoms = sum(int(g[keys.ATOMIC_NUMBERS].shape[0]) for g in graphs)
        self.set_statistics(energy_shift, energy_scale, max(n_edges / max(n_atoms, 1), 1.0))
        if isolated_energy is not None:
            self.set_isolated_energy(isolated_energy)
