"""Active learning with a committee and a QM oracle: ``nearsight active-learn CONFIG [--resume]``.

Each iteration:

1. **train**: the training set is every successful label of the oracle in the label
   store (``output_dir/labels.db``, an ASE SQLite database written only by this
   process), in a canonical order (iteration, geometry hash); a committee of
   ``committee.n_members`` models is trained on it (seeds ``seed + k``, optional
   bootstrap; ``committee.fine_tune``: each member starts from its predecessor).  With
   ``committee.valid_fraction: 0`` (the default) every member trains on all labels and
   keeps the model of lowest training loss; a held-out fraction (> 0, different for every
   member) selects each member's best model on a few frames instead, which with a few
   dozen heterogeneous labels often keeps a member from an early epoch and inflates the
   committee σ everywhere (measured on water: ``benchmarks/active_learning/RESULTS.md``);
2. **evaluate** (when ``test`` is given): energy/force errors of the committee mean
   and calibration of the force σ on the independent test set;
3. **explore**: Langevin MD with the committee from each start structure at each
   temperature; a trajectory stops at the first frame whose largest per-atom force
   σ (``max_force_std``) exceeds ``select.threshold``.  A frame whose σ is not finite
   is a *failed candidate*: the trajectory stops, the frame is recorded in
   ``failed_candidates.xyz`` and never labelled.  If no trajectory triggers, the
   loop has converged;
4. **select**: a diverse batch of at most ``select.batch_size`` frames from the
   candidates (every sampled frame with σ above ``select.min_sigma_fraction`` ×
   threshold): farthest-point sampling on sorted interatomic distances, starting
   from the largest σ;
5. **label**: :func:`nearsight.qm.label_structures` in ``labelling.n_workers``
   processes; provenance stored with each row: ``iteration``, ``selection``
   (``seed`` or ``committee``), ``sigma`` (max force σ at selection, eV/Å),
   ``parent`` (trajectory name), ``md_step``, ``temperature``; method, basis and
   wall time come from the oracle.  Failed labels (unconverged SCF, exceptions,
   timeouts) land in the store's failure table and are not retried.

Crash safety: every label is committed as it arrives; ``state.json`` (atomic
rename) records the finished stages; each stage is deterministic given its inputs
(seeded training, seeded MD, canonical data order), so after ``kill -9`` at any
point ``--resume`` redoes at most the interrupted stage and the oracle is never
asked twice for a stored geometry (the store refuses a second label of a hash).

Code in configs: ``oracle: {type: python, object: "module:Name", kwargs: {...}}`` imports
``module`` and calls ``Name(**kwargs)``, so it runs only with an explicit opt-in: the
``--allow-python-oracle`` flag of ``nearsight active-learn``, or
``run_active_learning(..., allow_python_oracle=True)`` / ``make_oracle(..., allow_python=True)``.
A config file alone never imports or runs code (it is read with ``yaml.safe_load``; a YAML
tag such as ``!!python/object`` is an :class:`ActiveLearningConfigError` naming the file).

Modules: :mod:`~nearsight.active_learning.config` (the config and the oracle),
:mod:`~nearsight.active_learning.selection` (diverse batches), :mod:`~nearsight.active_learning.loop`.
"""

from .config import ActiveLearningConfigError, load_al_config, make_oracle
from .loop import (
    _explore,
    _train_config,
    _train_member,
    evaluate_committee,
    run_active_learning,
    training_frames,
)
from .selection import select_diverse

__all__ = [
    "_explore",  # the loop's steps, used by the benchmarks and tests that run parts of it
    "_train_config",
    "_train_member",
    "ActiveLearningConfigError",
    "evaluate_committee",
    "load_al_config",
    "make_oracle",
    "run_active_learning",
    "select_diverse",
    "training_frames",
]
