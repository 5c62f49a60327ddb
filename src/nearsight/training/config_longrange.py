"""Validation of ``model.longrange`` (:mod:`nearsight.longrange`): its terms (``coulomb``,
``dispersion``), where the charges come from (``charges: head | qeq``) and the charge-equilibration
options (``qeq``).  Each term is built once, so a bad argument is a :class:`ConfigError` naming the
key before any data are read."""

from __future__ import annotations

from .config import ConfigError


def check_longrange(spec: dict, source: str) -> None:
    """``model.longrange``: known terms, each built once to check its arguments; ``charges: head |
    qeq`` and the ``qeq`` options (:class:`~nearsight.longrange.qeq.ChargeEquilibration`)."""
    allowed = ["charges", "coulomb", "dispersion", "initial_charges", "qeq", "repulsion"]
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ConfigError(f"{source}: model.longrange: unknown key(s) {unknown}; allowed: {allowed}")
    for name in ("coulomb", "dispersion", "repulsion"):
        value = spec.get(name)
        if value is True:
            spec[name] = value = {}
        if value is None or value is False:
            spec[name] = None
            continue
        if not isinstance(value, dict):
            raise ConfigError(
                f"{source}: model.longrange.{name} = {value!r}: must be a mapping, true or null"
            )
        from ..longrange import Coulomb, Dispersion
        from ..longrange.repulsion import ZBLRepulsion

        try:
            {"coulomb": Coulomb, "dispersion": Dispersion, "repulsion": ZBLRepulsion}[name](**value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: model.longrange.{name}: {exc}") from exc
    if all(spec.get(name) is None for name in ("coulomb", "dispersion", "repulsion")):
        raise ConfigError(f"{source}: model.longrange: give coulomb, dispersion and/or repulsion")
    check_qeq(spec, source)
    check_initial_charges(spec, source)


def check_initial_charges(spec: dict, source: str) -> None:
    """``model.longrange.initial_charges``: where a fresh charge head starts.  ``fit`` (the default
    with head charges and Coulomb): per-element charges fitted to the training energies
    (:mod:`nearsight.longrange.charge_fit`); ``zero``: the head's random initialisation; a mapping
    ``{element: charge}`` (e): those charges."""
    value = spec.get("initial_charges")
    if spec.get("coulomb") is None or spec.get("charges") == "qeq":
        if value not in (None, "zero"):
            why = "no model.longrange.coulomb" if spec.get("coulomb") is None else "charges: qeq"
            raise ConfigError(
                f"{source}: model.longrange.initial_charges = {value!r}: only for head charges with a "
                f"Coulomb term ({why} here)"
            )
        spec["initial_charges"] = "zero"
        return
    if value is None:
        spec["initial_charges"] = "fit"
    elif isinstance(value, dict):
        from ..longrange.coulomb import element_values

        try:
            element_values(value, "model.longrange.initial_charges", "e", positive=False)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    elif value not in ("fit", "zero"):
        raise ConfigError(
            f"{source}: model.longrange.initial_charges = {value!r}: must be 'fit', 'zero' or a mapping "
            "{element: charge}"
        )


def check_qeq(spec: dict, source: str) -> None:
    """``model.longrange.charges`` (head: the charge head's charges; qeq: charge equilibration) and
    ``model.longrange.qeq``."""
    import inspect

    charges = spec.setdefault("charges", "head")
    if charges not in ("head", "qeq"):
        raise ConfigError(f"{source}: model.longrange.charges = {charges!r}: must be 'head' or 'qeq'")
    qeq = spec.get("qeq")
    if charges == "head":
        if qeq is not None:
            raise ConfigError(f"{source}: model.longrange.qeq is only read with model.longrange.charges: qeq")
        return
    if spec.get("coulomb") is None:
        raise ConfigError(f"{source}: model.longrange.charges: qeq needs model.longrange.coulomb")
    if spec["coulomb"].get("widths") is not None:
        raise ConfigError(
            f"{source}: model.longrange.coulomb.widths: with charges: qeq the Gaussian widths are "
            "model.longrange.qeq.widths"
        )
    if qeq is None:
        spec["qeq"] = qeq = {}
    if not isinstance(qeq, dict):
        raise ConfigError(f"{source}: model.longrange.qeq = {qeq!r}: must be a mapping")
    from ..longrange import Coulomb
    from ..longrange.qeq import ChargeEquilibration

    allowed = sorted(set(inspect.signature(ChargeEquilibration).parameters) - {"species", "coulomb"})
    unknown = sorted(set(qeq) - set(allowed))
    if unknown:
        raise ConfigError(f"{source}: model.longrange.qeq: unknown key(s) {unknown}; allowed: {allowed}")
    try:
        ChargeEquilibration([1], Coulomb(**spec["coulomb"]), **qeq)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: model.longrange.qeq: {exc}") from exc
