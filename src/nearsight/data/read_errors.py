"""Errors of files ``ase.io`` cannot parse, located: the file, the frame and (for extxyz) the line.

ASE's extxyz reader first scans the atom-count lines of the whole file and then parses one
frame at a time, so its messages ("Frame has 5 atoms, expected 9", "could not convert string
to float: 'abc'", "Unknown property type: Q") name neither the frame nor the line.
:func:`read_error` is called once ``ase.io.read`` has failed: it scans an (ext)xyz file's
structure itself (atom counts against atom lines: a truncated file, a wrong count) and
otherwise finds the first frame ``ase.io.iread`` cannot parse, and the line of the bad value.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["read_error"]

_XYZ_SUFFIXES = (".xyz", ".extxyz")


def _is_xyz(path: Path, format: str | None) -> bool:
    """Whether ``path`` is read as (ext)xyz: by ``format``, else by its extension (compressed too)."""
    if format is not None:
        return format in ("xyz", "extxyz")
    suffixes = [x.lower() for x in path.suffixes]
    while suffixes and suffixes[-1] in (".gz", ".bz2", ".xz"):
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in _XYZ_SUFFIXES


def _scan_xyz(path: Path) -> tuple[list[tuple[int, int]], str | None]:
    """``(line of the atom count, atom count)`` of each frame of an (ext)xyz file, and the first
    structural problem (a bad count line, a truncated frame) as ``"frame k (line n): ..."``."""
    from ase.io.formats import open_with_compression

    frames: list[tuple[int, int]] = []
    with open_with_compression(str(path), "r") as fh:
        lines = enumerate(fh, start=1)
        for number, line in lines:
            if not line.strip():  # ASE's reader, too, stops at the first blank count line
                break
            k = len(frames)
            try:
                n_atoms = int(line)
            except ValueError:
                hint = ""
                if frames:
                    first, count = frames[-1]
                    hint = f"; the atom count {count} of frame {k - 1} (line {first}) may be wrong"
                got = line.strip()[:72]
                return (
                    frames,
                    f"frame {k} (line {number}): expected the atom count of a frame, got {got!r}{hint}",
                )
            if next(lines, None) is None:
                return frames, f"frame {k} (line {number}): the file ends after the atom count (truncated)"
            for i in range(n_atoms):
                entry = next(lines, None)
                if entry is None or not entry[1].strip():
                    end = "the file ends" if entry is None else f"line {entry[0]} is blank"
                    return frames, (
                        f"frame {k} (line {number}): {n_atoms} atoms declared but {end} after {i} atom "
                        "lines (a truncated file or a wrong atom count)"
                    )
                if len(entry[1].split()) < 4:
                    return frames, (
                        f"frame {k} (line {number}): {n_atoms} atoms declared but line {entry[0]} is not an "
                        f"atom line ({entry[1].strip()[:72]!r}): the atom count is wrong or a line is missing"
                    )
            frames.append((number, n_atoms))
    return frames, None


def _first_bad_frame(path: Path, format: str | None) -> tuple[int, BaseException | None]:
    """How many frames ``ase.io.iread`` yields before it fails, and its exception (None: no failure)."""
    import ase.io

    count = 0
    try:
        for _ in ase.io.iread(str(path), index=":", format=format):
            count += 1
    except Exception as exc:  # noqa: BLE001 - the caller reports it naming the frame
        return count, exc
    return count, None


def _line_with(path: Path, first: int, last: int, token: str) -> int | None:
    """The first line in ``first..last`` with the whitespace-separated field ``token``."""
    from itertools import islice

    from ase.io.formats import open_with_compression

    with open_with_compression(str(path), "r") as fh:
        for number, line in enumerate(islice(fh, first - 1, last), start=first):
            if token in line.split():
                return number
    return None


def read_error(path: Path, format: str | None, exc: BaseException) -> str:
    """A message for an ``ase.io.read`` failure that names the file and the frame (and line)."""
    from ase.io.formats import UnknownFileTypeError

    source = repr(str(path))
    if isinstance(exc, UnknownFileTypeError):
        return f"{source}: cannot tell the file format ({exc}); name it (data.format, --format)"
    starts: list[tuple[int, int]] = []
    if _is_xyz(path, format):
        try:
            starts, problem = _scan_xyz(path)
        except (OSError, UnicodeDecodeError) as err:
            return f"{source}: cannot read the file ({err})"
        if problem is not None:
            return f"{source}, {problem}"
    try:
        k, err = _first_bad_frame(path, format)
    except Exception:  # noqa: BLE001 - locating is best effort; the original error is reported
        k, err = 0, None
    if err is None:
        return f"{source}: cannot be read ({type(exc).__name__}: {exc})"
    message = str(err) or type(err).__name__
    where = f"{source}, frame {k}"
    if k < len(starts):
        first, n_atoms = starts[k]
        last = first + n_atoms + 1
        line = None
        if "propert" in message.lower():
            line = first + 1
            message += " (extxyz property types: R real, I integer, S string, L logical)"
        elif (quoted := re.search(r"'([^']+)'", message)) is not None:
            line = _line_with(path, first + 2, last, quoted.group(1))
        where += f" (line {line})" if line is not None else f" (lines {first}-{last})"
    return f"{where}: {message}"
