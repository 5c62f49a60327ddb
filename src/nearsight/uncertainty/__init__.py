"""Committee (ensemble) uncertainty and calibration metrics.

    from nearsight.uncertainty import EnsembleCalculator, train_committee
    paths = train_committee(config, n_members=4, bootstrap=True)   # Trainer with seeds seed, seed+1, ...
    atoms.calc = EnsembleCalculator(paths)
    atoms.get_forces()                      # committee mean
    atoms.calc.results["max_force_std"]     # largest per-atom force deviation, eV/Å

``EnsembleCalculator.results`` keys (means over the members unless noted):

* ``energy``, ``free_energy`` (eV), ``energies`` (per atom, eV), ``forces`` [n, 3] (eV/Å),
  ``stress`` (Voigt 6, eV/Å³; cells periodic in all three directions);
* ``energy_std`` (eV): standard deviation of the members' energies (ddof=0);
* ``forces_std`` [n, 3] (eV/Å): per-component standard deviation;
* ``atom_force_std`` [n] (eV/Å): sqrt(Σ_xyz var) per atom;
* ``max_force_std`` (eV/Å): max of ``atom_force_std`` -- the active-learning trigger;
* ``stress_std`` (Voigt 6) when ``stress`` is present;
* ``energy_members`` [n_members] and ``forces_members`` [n_members, n, 3];
* ``sigma_scale``: the calibration factor applied to every ``*_std`` above (1 unless given);
* with ``aleatoric=`` (a model from :func:`fit_aleatoric_head`): ``energy_aleatoric_std`` (eV) and
  ``forces_aleatoric_std`` [n] (eV/Å, per Cartesian component of each atom's force) -- the
  label noise the data showed, reported separately from the committee (epistemic) spread;
* ``extrapolation`` [n] and ``extrapolating_atoms`` when members return ``keys.EXTRAPOLATION``:
  the largest per-atom count over the members (``on_extrapolation`` as in
  :class:`nearsight.NearsightCalculator`).

Like :class:`nearsight.NearsightCalculator`, the committee refuses atoms closer than
``min_distance`` and non-finite outputs of any member (:mod:`nearsight.guards`).

Aleatoric uncertainty: :func:`fit_aleatoric_head` trains a heteroscedastic head -- a
Behler-Parrinello network with two outputs per atom, log σ²_E,i (variance of the atom's
energy contribution; σ²_E = Σ_i) and log σ²_F,i (variance of each force component on atom
i) -- by minimising the Gaussian negative log-likelihood of the residuals of a trained
(frozen) mean model.  The head is an ordinary model file (``metadata["aleatoric"]``).

Members may be any model type :func:`nearsight.models.io.load_model` reads.
Calibration (:func:`calibration_report`) compares errors with predicted σ: a fitted
σ scale (maximum likelihood for Gaussian errors), miscalibration area, Gaussian
negative log-likelihood and the Spearman rank correlation between |error| and σ.

Modules: :mod:`~nearsight.uncertainty.committee` (the calculator, committee predictions),
:mod:`~nearsight.uncertainty.members` (training the members), :mod:`~nearsight.uncertainty.aleatoric`
(the heteroscedastic head), :mod:`~nearsight.uncertainty.calibration` (σ against errors).
"""

from .._files import atomic_write
from .aleatoric import aleatoric_log_variances, fit_aleatoric_head
from .calibration import calibration_report, fit_sigma_scale, gaussian_nll, miscalibration_area, spearman
from .committee import EnsembleCalculator, predict_committee
from .members import member_finished, restart_member, train_committee

__all__ = [
    "EnsembleCalculator",
    "aleatoric_log_variances",
    "atomic_write",
    "calibration_report",
    "fit_aleatoric_head",
    "fit_sigma_scale",
    "gaussian_nll",
    "member_finished",
    "miscalibration_area",
    "predict_committee",
    "restart_member",
    "spearman",
    "train_committee",
]
