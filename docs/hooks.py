"""MkDocs hooks: the pages generated at build time (nothing generated is committed).

* ``reference/cli.md``: every subcommand of :func:`nearsight.cli.main.build_parser` with its usage
  and options (a new subcommand appears without editing the docs);
* ``reference/config.md``: every key of the training config (:data:`nearsight.training.config.SCHEMA`,
  its type, default, check and the comment beside it in the source), the active-learning config
  (``_DEFAULTS`` of :mod:`nearsight.active_learning.config`), ``model.equivariant``,
  ``model.longrange`` (the constructor signatures of its terms), and the surface-hopping and
  sampling configs (their key sets, with the defaults a minimal config gets);
* ``tutorials/<name>.md`` from each jupytext "percent" script ``docs/tutorials/<name>.py``
  (``# %% [markdown]`` cells become prose, ``# %%`` cells Python blocks); scripts not in the nav
  are appended to it, and nav entries without a script are dropped;
* the result pages: a page marker ``<!-- results: PAGE -->`` is replaced by the ``##`` sections of
  ``benchmarks/RESULTS.md`` whose heading matches PAGE's rule (unmatched sections go to ``other``),
  and ``<!-- include: PATH -->`` by a whole Markdown file, headings shifted one level down; images
  they link are copied into the site, links to other repository files become plain paths.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the generators beside this file
from gen_cli import cli_markdown  # noqa: E402
from gen_config import config_markdown  # noqa: E402

log = logging.getLogger("mkdocs.hooks.nearsight")
ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "docs" / "tutorials"

# --------------------------------------------------------------------------- tutorials


def percent_to_markdown(source: str, name: str) -> str:
    """A jupytext percent-format script as Markdown: prose cells as text, code cells as Python blocks."""
    cells: list[tuple[str, list[str]]] = [("code", [])]
    for line in source.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        else:
            cells[-1][1].append(line)
    parts = []
    for kind, lines in cells:
        if kind == "markdown":
            text = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines).strip()
            if text:
                parts.append(text)
        else:
            code = "\n".join(lines).strip("\n")
            if code.strip():
                parts.append(f"```python\n{code}\n```")
    note = (
        f'!!! note "Run it"\n    This page is generated from `docs/tutorials/{name}.py`. Run it with\n'
        f"    `.venv/bin/python docs/tutorials/{name}.py` from the repository (minutes), or with\n"
        f"    `NEARSIGHT_TUTORIAL_QUICK=1` set for the short version the tests run (under a minute).\n"
        f"    Outputs go to `$NEARSIGHT_TUTORIAL_DIR` (default `outputs/tutorials/{name}`)."
    )
    if parts and parts[0].startswith("# "):  # keep the title first
        title, _, rest = parts[0].partition("\n")
        parts[0] = f"{title}\n\n{note}\n\n{rest.strip()}".rstrip()
    else:
        parts.insert(0, note)
    return "\n\n".join(parts) + "\n"


def _tutorial_scripts() -> list[Path]:
    return sorted(TUTORIALS.glob("*.py"))


def on_config(config: Any) -> Any:
    """Drop nav entries of tutorials whose script does not exist; append scripts the nav lacks."""
    names = {p.stem for p in _tutorial_scripts()}
    for section in config["nav"]:
        if isinstance(section, dict) and "Tutorials" in section:
            entries = section["Tutorials"]
            kept, listed = [], set()
            for entry in entries:
                page = entry if isinstance(entry, str) else next(iter(entry.values()))
                m = re.fullmatch(r"tutorials/(\w+)\.md", page)
                if m and m.group(1) != "index" and m.group(1) not in names:
                    log.info("tutorial %s.py does not exist: left out of the nav", m.group(1))
                    continue
                if m:
                    listed.add(m.group(1))
                kept.append(entry)
            for name in sorted(names - listed):
                kept.append({name.replace("_", " ").capitalize(): f"tutorials/{name}.md"})
            section["Tutorials"] = kept
    return config


# --------------------------------------------------------------------------- results

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
# page -> heading pattern; the first match wins, so the specific pages come first
RESULT_RULES = [
    ("long-range", r"issue 17|[Ll]ong-range"),
    ("nonadiabatic", r"issue 18"),
    ("lammps", r"issue 19|LAMMPS"),
    ("properties", r"issue 20|^Properties"),
    ("sampling", r"issue 21|^Sampling"),
    ("locality", r"[Ll]ocality|nearsightedness"),
    ("active-learning", r"issue 5\b|[Mm]ulti-fidelity|[Aa]ctive learning"),
    ("materials", r"Silicon|Throughput|DScribe"),
    ("molecules", r"Ethanol|NVE|Demo"),
]
IMAGE = re.compile(r"\.(png|svg|jpe?g|gif)$", re.I)
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def result_sections() -> dict[str, list[str]]:
    """The ``##`` sections of benchmarks/RESULTS.md by result page."""
    pages: dict[str, list[str]] = {page: [] for page, _ in RESULT_RULES}
    pages["other"] = []
    text = RESULTS.read_text()
    chunks = re.split(r"(?m)^(?=## )", text)
    for chunk in chunks[1:]:
        heading = chunk.splitlines()[0][3:]
        page = next((p for p, rule in RESULT_RULES if re.search(rule, heading)), "other")
        pages[page].append(chunk.rstrip() + "\n")
    return pages


def blank_before_lists(text: str) -> str:
    """A blank line before a list that follows a paragraph line: GitHub renders such a list, Python-Markdown
    does not (the benchmark reports are written for GitHub)."""
    out, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        prev = out[-1] if out else ""
        if (
            not fence
            and re.match(r"([-*+]|\d+\.) ", line)
            and prev.strip()
            and not re.match(r"\s*([-*+]|\d+\.) |\s|\|", prev)
        ):
            out.append("")
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _asset_name(path: Path) -> str:
    return "assets/" + str(path.relative_to(ROOT)).replace("/", "_")


def _fix_links(text: str, source: Path) -> str:
    """Images linked from a benchmark file point to their copy; other repository links become paths."""

    def fix(m: re.Match) -> str:
        bang, label, target = m.groups()
        if re.match(r"[a-z]+://|#|mailto:", target):
            return m.group(0)
        path = (source.parent / target.split("#")[0]).resolve()
        if bang and IMAGE.search(target) and path.is_file():
            return f"![{label}]({_asset_name(path)})"
        rel = os.path.relpath(path, ROOT)
        return f"{bang}{label} (`{rel}`)" if label else f"`{rel}`"

    return LINK.sub(fix, text)


def _linked_images() -> set[Path]:
    sources = [RESULTS, *(ROOT / "benchmarks").rglob("*.md")]
    out = set()
    for src in sources:
        for bang, _, target in LINK.findall(src.read_text()):
            path = (src.parent / target).resolve()
            if bang and IMAGE.search(target) and path.is_file():
                out.add(path)
    return out


def _include(path_text: str) -> str:
    path = ROOT / path_text.strip()
    if not path.is_file():
        raise FileNotFoundError(f"<!-- include: {path_text} -->: no file {path}")
    text = path.read_text()
    text = re.sub(r"(?m)^(#{1,5}) ", r"#\1 ", text)  # one level down: the page has its own title
    note = f"*From `{path.relative_to(ROOT)}`.*\n\n"
    return note + blank_before_lists(_fix_links(text, path))


def on_files(files: Files, config: Any) -> Files:
    def generated(uri: str, content: str) -> None:
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=content))

    for script in _tutorial_scripts():
        generated(f"tutorials/{script.stem}.md", percent_to_markdown(script.read_text(), script.stem))
    generated("reference/cli.md", cli_markdown())
    generated("reference/config.md", config_markdown())
    for image in sorted(_linked_images()):
        files.append(File.generated(config, f"results/{_asset_name(image)}", abs_src_path=str(image)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if "<!-- results:" in markdown:
        sections = result_sections()

        def results(m: re.Match) -> str:
            chunks = sections[m.group(1)]
            if not chunks:
                return "*No section of `benchmarks/RESULTS.md` belongs here at present.*\n"
            body = "\n".join(chunks)
            return f"*From `benchmarks/RESULTS.md`.*\n\n{blank_before_lists(_fix_links(body, RESULTS))}"

        markdown = re.sub(r"<!-- results: ([\w-]+) -->", results, markdown)
    if "<!-- include:" in markdown:
        markdown = re.sub(r"<!-- include: (\S+) -->", lambda m: _include(m.group(1)), markdown)
    return markdown
