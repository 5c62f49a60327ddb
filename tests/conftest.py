"""Shared test settings: where the reference datasets live."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$NEARSIGHT_DATA``, else ``shared/data`` beside the repository (as in CI), else /work/shared/data."""
    if "NEARSIGHT_DATA" in os.environ:
        return Path(os.environ["NEARSIGHT_DATA"])
    for candidate in (ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "data"
