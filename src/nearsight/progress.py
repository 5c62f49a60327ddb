"""Progress bars for people at a terminal, and nothing else changed for everyone else.

:func:`progress_bar` gives a `tqdm <https://tqdm.github.io>`_ bar on standard error when that is an
interactive terminal, and otherwise an object with the same surface that does nothing, so the plain
lines a run prints (which scripts and tests parse) stay exactly as they are when output is redirected.

The environment variable ``NEARSIGHT_PROGRESS`` decides: ``0`` never shows bars, ``1`` always does
(even when standard error is a file or a pipe); unset or anything else: bars only on a terminal.
Under ``torchrun`` only rank 0 shows one.

Lines printed while a bar is shown go through :meth:`Bar.wrap`: the bar is cleared, the line written
and the bar drawn again below it (``tqdm.external_write_mode``), so logs and bars do not mix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm import tqdm

__all__ = ["Bar", "NoBar", "progress_bar", "progress_enabled"]

ENV = "NEARSIGHT_PROGRESS"


def progress_enabled() -> bool:
    """Whether bars are shown: ``NEARSIGHT_PROGRESS`` is ``1``, or it is not ``0`` and standard error
    is a terminal; never on a rank other than 0 of a distributed run."""
    if os.environ.get("RANK", "0") not in ("", "0"):
        return False
    setting = os.environ.get(ENV, "").strip()
    if setting == "0":
        return False
    if setting == "1":
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


class NoBar:
    """What :func:`progress_bar` returns when bars are off: the surface of a bar, doing nothing."""

    n = 0

    def __init__(self, iterable: Iterable | None = None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable if self.iterable is not None else ())

    def __enter__(self) -> NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: float = 1) -> None:
        return None

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values: Any) -> None:
        return None

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        return None

    def close(self) -> None:
        return None

    def wrap(self, fn: Callable) -> Callable:
        """``fn`` itself: without a bar, lines are printed as they always were."""
        return fn


class Bar(tqdm):
    """A tqdm bar whose :meth:`set_postfix` adds to the values shown instead of replacing them, and
    whose :meth:`wrap` prints lines above it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._shown: dict[str, Any] = {}
        super().__init__(*args, **kwargs)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values: Any) -> None:
        self._shown.update(ordered_dict or {})
        self._shown.update(values)
        super().set_postfix(self._shown, refresh=refresh)

    def wrap(self, fn: Callable) -> Callable:
        """``fn`` (something that prints a line) run with the bars cleared, then redrawn."""

        def write(*args: Any, **kwargs: Any) -> Any:
            with self.external_write_mode():
                return fn(*args, **kwargs)

        return write


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    initial: float = 0,
    enabled: bool | None = None,
) -> Bar | NoBar:
    """A tqdm bar over ``iterable`` (or updated by hand up to ``total``) on standard error, or a
    :class:`NoBar` when bars are off.

    ``enabled``: None decides by :func:`progress_enabled`; False never shows one (e.g. on ranks other
    than 0); True always does.  A bar nested in another (a training inside an active-learning
    iteration) disappears when it closes; the outermost one stays.
    """
    if enabled is None:
        enabled = progress_enabled()
    if not enabled:
        return NoBar(iterable)
    return Bar(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        file=sys.stderr,
        leave=None,
        dynamic_ncols=True,
    )
