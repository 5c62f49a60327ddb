"""Training a potential: one concept per module, the ``Trainer`` composes them.

============================  =====  ==========================================================
module                        lines  what it owns
============================  =====  ==========================================================
``config``                      396  the YAML schema, defaults and checks of every key
``config_longrange``             74  the checks of ``model.longrange`` (terms, charges, QEq)
``dataset``                     279  reading, Δ-learning baselines, the split, label validation,
                                     graphs, heads, and the training statistics (reference
                                     energies, energy scale, label spreads)
``dispersion``                  163  ``data.dispersion``: D3 out of the labels at load time and
                                     back into the saved model
``model_setup``                 199  building the model, fine-tuning (init_from, frozen layers,
                                     refitted shifts) and fitting its statistics
``loss``                        332  the loss as declared terms (energy, forces, stress, and any
                                     registered term), their σ defaults, masks and state
``optimisation``                154  Adam/AdamW, warm-up, plateau/cosine/budget schedules,
                                     stages, EMA, clipping and the non-finite check of a step
``validation``                   73  the validation loss (total and per term), metrics and the
                                     report of the best model
``checkpoint``                  132  checkpoint files, what a resume restores, whether a run is done
``log``                         151  ``training_log.csv``, TensorBoard, console lines, the
                                     learning curve
``trainer``                     399  ``Trainer``: the composition and the epoch/step loop
``ema``, ``distributed``,         -  weight averaging, data-parallel helpers, error metrics and
``metrics``                          parity plots
============================  =====  ==========================================================

Adding a capability: a new label is read with ``data.extra_labels`` (a field declared in
:mod:`nearsight.keys`), a new loss term is a :class:`~nearsight.training.loss.LossTerm`
registered with :func:`~nearsight.training.loss.register_loss_term`; neither touches the trainer.
"""
