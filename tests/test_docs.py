"""The documentation site builds without a warning, and its generated references are complete.

``mkdocs build --strict`` (warnings are errors: broken links, missing pages, docstrings that do
not render) into a temporary directory; then the command-line page must name every subcommand of
``nearsight.cli.main.build_parser()`` and the configuration page every key of the training
config schema and of the active-learning defaults.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.xdist_group("docs")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    return out


def _subcommands() -> list[str]:
    from nearsight.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_cli_page_lists_every_subcommand(site: Path):
    page = (site / "reference" / "cli.html").read_text()
    commands = _subcommands()
    assert {"train", "evaluate", "md"} <= set(commands)
    missing = [c for c in commands if f'id="nearsight-{c}"' not in page]
    assert not missing, f"subcommands missing from the CLI reference: {missing}"


def test_config_page_lists_every_key(site: Path):
    from nearsight.active_learning.config import _DEFAULTS
    from nearsight.training.config import SCHEMA

    page = (site / "reference" / "config.html").read_text()
    keys = [f"{section}.{key}" if section else key for section, entries in SCHEMA.items() for key in entries]
    missing = [k for k in keys if f"<code>{k}</code>" not in page]
    assert not missing, f"training-config keys missing from the configuration reference: {missing}"

    def flat(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            out += flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v and k != "oracle" else [prefix + k]
        return out

    missing = [k for k in flat(_DEFAULTS) if f"<code>{k}</code>" not in page]
    assert not missing, f"active-learning keys missing from the configuration reference: {missing}"


def test_tutorial_pages_are_generated(site: Path):
    for script in sorted((ROOT / "docs" / "tutorials").glob("*.py")):
        page = site / "tutorials" / f"{script.stem}.html"
        assert page.is_file(), f"no page for {script.name}"
        assert "language-python" in page.read_text() or "highlight" in page.read_text()


def test_every_results_section_has_a_page(site: Path):
    import re

    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    headings = re.findall(r"(?m)^## (.+)$", text)
    pages = "".join(p.read_text() for p in (site / "results").glob("*.html"))
    words = [re.sub(r"[`*]", "", h).split(":")[0].strip()[:25] for h in headings]
    import html

    missing = [w for w in words if html.escape(w, quote=False) not in pages and w not in pages]
    assert not missing, f"sections of benchmarks/RESULTS.md on no result page: {missing}"
