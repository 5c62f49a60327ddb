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

import ast
import html
import inspect
import io
import logging
import os
import re
import tempfile
import tokenize
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

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


# --------------------------------------------------------------------------- command line


def _cell(text: Any) -> str:
    return html.escape(" ".join(str(text).split())).replace("|", "\\|")


def _subcommands(parser) -> list[tuple[str, Any, str]]:
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help or "" for c in sub._choices_actions}
    seen, out = set(), []
    for name, p in sub.choices.items():
        if id(p) not in seen:
            seen.add(id(p))
            out.append((name, p, helps.get(name, "")))
    return out


def _options_table(parser) -> str:
    import argparse

    rows = ["| argument | default | description |", "|---|---|---|"]
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        metavar = " ".join(a.metavar) if isinstance(a.metavar, tuple) else a.metavar
        if a.option_strings:
            name = ", ".join(a.option_strings)
            if a.nargs != 0:
                name += " " + (metavar or a.dest.upper())
                if a.nargs in ("+", "*"):
                    name += " ..."
        else:
            name = metavar or a.dest
            if a.nargs in ("+", "*"):
                name += " ..." if a.nargs == "+" else " [...]"
        default = a.default
        hidden = default is None or default is False or default == argparse.SUPPRESS or a.nargs == 0
        shown = "" if hidden else f"`{default}`"
        text = a.help or ""
        if a.choices:
            text = f"{text} (one of: {', '.join(map(str, a.choices))})".strip()
        if a.required and a.option_strings:
            text = f"required; {text}"
        rows.append(f"| `{_cell(name)}` | {shown} | {_cell(text)} |")
    return "\n".join(rows)


def cli_markdown() -> str:
    """The command-line reference, rendered from the parser itself."""
    from nearsight.cli.main import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser()
        commands = _subcommands(parser)
        doc = [
            "# Command-line reference",
            "",
            "Generated at build time from `nearsight.cli.main.build_parser()`: every subcommand of",
            "`nearsight`, its usage and options. `nearsight COMMAND --help` prints the same.",
            "Errors end a command with one line, `nearsight COMMAND: error: ...`, and exit status 2;",
            "`--traceback` (or `NEARSIGHT_TRACEBACK=1`) shows the Python traceback.",
            "",
            "| command | what it does |",
            "|---|---|",
        ]
        doc += [f"| [`{n}`](#nearsight-{n}) | {_cell(h)} |" for n, _, h in commands]
        doc += ["", "```text", parser.format_usage().strip(), "```", ""]
        for name, p, help_ in commands:
            doc += [f"## nearsight {name} {{#nearsight-{name}}}", "", help_[:1].upper() + help_[1:] + ".", ""]
            if p.description:
                doc += [p.description, ""]
            doc += ["```text", p.format_usage().strip(), "```", "", _options_table(p), ""]
            if p.epilog:
                doc += ["```text", p.epilog.strip(), "```", ""]
        return "\n".join(doc)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


# --------------------------------------------------------------------------- configuration

_CHECKS = {"_positive": "> 0", "_non_negative": "≥ 0", "_fraction": "in [0, 1)"}


def _yaml(value: Any) -> str:
    import yaml

    if value is None:
        return "`null`"
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return f"`{text}`"


def _types(types: Any) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {"NoneType": "null", "str": "string", "int": "int", "float": "float", "bool": "bool"}
    return " or ".join(names.get(t.__name__, t.__name__) for t in types)


def _comments(path: Path) -> dict[int, str]:
    """Comment text by line number (1-based)."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def _described_keys(path: Path, name: str) -> dict[tuple[str, ...], str]:
    """{key path: comment} of the dict literal assigned to ``name`` in ``path``: the comment lines
    directly above a key and the comment at the end of its line(s)."""
    source = path.read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    comments = _comments(path)
    node = next(
        n.value
        for n in ast.walk(tree)
        if isinstance(n, (ast.Assign, ast.AnnAssign))
        and any(
            isinstance(t, ast.Name) and t.id == name
            for t in getattr(n, "targets", [getattr(n, "target", None)])
        )
    )
    out: dict[tuple[str, ...], str] = {}

    def walk(d: ast.Dict, prefix: tuple[str, ...]) -> None:
        for k, v in zip(d.keys, d.values, strict=True):
            if not isinstance(k, ast.Constant):
                continue
            key = (*prefix, str(k.value))
            above, line = [], k.lineno - 1
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments.get(line, ""))
                line -= 1
            if isinstance(v, ast.Dict) and v.keys:
                out[key] = " ".join(above)
                walk(v, key)
            else:
                trailing = [comments[n] for n in range(k.lineno, v.end_lineno + 1) if n in comments]
                out[key] = " ".join([*above, *trailing]).strip()

    walk(node, ())
    return out


TRAINING_EXAMPLES = [
    "ethanol_bpnn.yaml",
    "ethanol_soap.yaml",
    "ethanol_equivariant.yaml",
    "ethanol_longrange.yaml",
]


def _example_comments(names: list[str]) -> dict[tuple[str, ...], str]:
    """Inline comments of block-style keys in the named examples/*.yaml files, by key path."""
    out: dict[tuple[str, ...], str] = {}
    for path in [ROOT / "examples" / n for n in names if (ROOT / "examples" / n).is_file()]:
        stack: list[tuple[int, str]] = []
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            m = re.match(r"^(\s*)([A-Za-z_]\w*):(.*)$", line)
            if not m:
                continue
            indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
            while stack and stack[-1][0] >= indent:
                stack.pop()
            keypath = (*[k for _, k in stack], key)
            stack.append((indent, key))
            if "#" in rest and not rest.split("#")[0].strip().startswith(("'", '"')):
                comment = rest.split("#", 1)[1].strip()
                column = len(line) - len(line.split("#", 1)[1]) - 1
                for following in lines[number + 1 :]:  # comment lines continuing it, same column
                    if not following.strip().startswith("#") or following.index("#") != column:
                        break
                    comment += " " + following.strip().lstrip("#").strip()
                value = rest.split("#", 1)[0].strip()
                if comment and keypath not in out:
                    shown = f"`{key}: {value}`, " if value else ""
                    out[keypath] = f"example {shown}`{path.relative_to(ROOT)}`: {comment}"
    return out


def _table(rows: list[tuple[str, str, str, str, str]]) -> list[str]:
    out = ["| key | type | default | must be | description |", "|---|---|---|---|---|"]
    out += [f"| `{k}` | {t} | {d} | {c} | {_cell(x)} |" for k, t, d, c, x in rows]
    return out


def _training_config() -> list[str]:
    from nearsight.training import config

    comments = _described_keys(Path(config.__file__), "SCHEMA")
    examples = _example_comments(TRAINING_EXAMPLES)
    doc = [
        "## Training config (`nearsight train`)",
        "",
        "`nearsight.training.config.SCHEMA`: section → key → (types, default, check). Unknown keys",
        "and bad values are errors naming the file, the key and the value. Data paths are relative",
        "to the config file, `output_dir` to the working directory. The description is the comment",
        "beside the key in the source, else one in `examples/`.",
        "",
    ]
    for section, keys in config.SCHEMA.items():
        doc += [f"### {'top level' if not section else section} {{#config-{section or 'top'}}}", ""]
        rows = []
        for key, (types, default, check) in keys.items():
            path = (section, key) if section else (key,)
            described = comments.get(path, "") or examples.get(path, "")
            hint = ""
            if check is not None:
                hint = _CHECKS.get(
                    check.__name__, check.__doc__ or check.__name__.strip("_").replace("_", " ")
                )
            rows.append((".".join(path), _types(types), _yaml(default), _cell(hint), described))
        doc += [*_table(rows), ""]
    return doc


def _equivariant() -> list[str]:
    from nearsight.models import equivariant_spec as spec

    keys = sorted(spec._SPEC_KEYS)
    doc = [
        "### model.equivariant {#config-equivariant}",
        "",
        "`model.type: equivariant` reads `model.equivariant`: a `preset` (default `medium`) and any of "
        + ", ".join(f"`{k}`" for k in keys if k != "preset")
        + " (the arguments of `EquivariantPotential`). The presets:",
        "",
        "| preset | " + " | ".join(sorted({k for p in spec.PRESETS.values() for k in p})) + " |",
        "|---|" + "---|" * len({k for p in spec.PRESETS.values() for k in p}),
    ]
    names = sorted({k for p in spec.PRESETS.values() for k in p})
    doc += [
        f"| `{p}` | " + " | ".join(str(v.get(n, "")) for n in names) + " |" for p, v in spec.PRESETS.items()
    ]
    from nearsight.models.equivariant import EquivariantPotential

    sig = inspect.signature(EquivariantPotential)
    doc += ["", "Defaults of the other keys (the constructor's):", ""]
    doc += ["| key | default |", "|---|---|"]
    doc += [
        f"| `{k}` | {_yaml(sig.parameters[k].default)} |"
        for k in keys
        if k in sig.parameters and sig.parameters[k].default is not inspect.Parameter.empty
    ]
    return [*doc, ""]


def _prose(text: str) -> list[str]:
    """A reST docstring as Markdown paragraphs (roles become code, indentation is dropped)."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    paragraphs = [" ".join(ln.strip() for ln in p.splitlines()) for p in re.split(r"\n\s*\n", text)]
    return [p for p in paragraphs if p]


def _signature_rows(cls: Any, skip: set[str]) -> list[str]:
    rows = ["| key | default |", "|---|---|"]
    for name, p in inspect.signature(cls).parameters.items():
        if name in skip or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        default = "required" if p.default is inspect.Parameter.empty else _yaml(p.default)
        rows.append(f"| `{name}` | {default} |")
    return rows


def _longrange() -> list[str]:
    from nearsight.longrange import Coulomb, Dispersion
    from nearsight.longrange.qeq import ChargeEquilibration
    from nearsight.longrange.repulsion import ZBLRepulsion
    from nearsight.training import config_longrange

    doc = [
        "### model.longrange {#config-longrange}",
        "",
        *_prose(inspect.getdoc(config_longrange.check_longrange) or ""),
        "",
        *_prose(inspect.getdoc(config_longrange.check_initial_charges) or ""),
        "",
        "Each term's mapping holds the keyword arguments of its class (their signature, below).",
        "",
    ]
    for key, cls, skip in (
        ("coulomb", Coulomb, set()),
        ("dispersion", Dispersion, set()),
        ("repulsion", ZBLRepulsion, set()),
        ("qeq", ChargeEquilibration, {"species", "coulomb"}),
    ):
        doc += [f"#### model.longrange.{key}: `{cls.__module__}.{cls.__name__}`", ""]
        doc += [*_signature_rows(cls, skip), ""]
        text = inspect.getdoc(cls) or ""
        if text:
            doc += ['??? info "What the arguments mean (the class docstring)"', ""]
            for paragraph in _prose(text):
                doc += ["    " + paragraph, ""]
            doc += [""]
    return doc


def _active_learning() -> list[str]:
    from nearsight.active_learning import config as al

    comments = _described_keys(Path(al.__file__), "_DEFAULTS")
    examples = _example_comments(["active_learning.yaml"])
    doc = [
        "## Active-learning config (`nearsight active-learn`)",
        "",
        *_prose(inspect.getdoc(al.load_al_config) or ""),
        "Defaults from `nearsight.active_learning.config._DEFAULTS`; `seeds` is required.",
        "`committee.train` is a training config (above) without `data` and `output_dir`;",
        "`oracle` is `{type: pyscf, method, basis, ...}`, `{type: emt}` or `{type: python, object:",
        '"module:Name", kwargs}` (the last only with `--allow-python-oracle`).',
        "",
        "| key | default | description |",
        "|---|---|---|",
    ]

    def walk(d: dict, prefix: tuple[str, ...]) -> None:
        for k, v in d.items():
            path = (*prefix, k)
            if isinstance(v, dict) and v and k not in ("oracle",):
                walk(v, path)
                continue
            text = comments.get(path, "") or examples.get(path, "")
            doc.append(f"| `{'.'.join(path)}` | {_yaml(v)} | {_cell(text)} |")

    walk(al._DEFAULTS, ())
    return [*doc, ""]


def _docstring_example(module: Any) -> list[str]:
    text = inspect.getdoc(module) or ""
    m = re.search(r"::\n\n((?:    .*\n|\n)+)", text + "\n")
    return ["```yaml", *[ln[4:] for ln in m.group(1).rstrip().splitlines()], "```"] if m else []


def _filled(load, raw: dict, *args) -> dict:
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "minimal.yaml"
        path.write_text(yaml.safe_dump(raw))
        return load(path, *args)


def _surface_hop() -> list[str]:
    from nearsight.cli import surface_hop as sh

    raw = {
        "potential": {"analytic": "tully1"},
        "initial": {"x0": -15.0, "k0": 20.0, "sigma_x": 5.0},
        "trajectories": 100000,
        "timestep_au": 1.0,
        "steps": 10,
        "output_dir": "out",
    }
    filled = _filled(sh.load_surface_hop_config, raw)
    doc = ["## Surface-hopping config (`nearsight surface-hop`)", ""]
    doc += [*_prose(inspect.getdoc(sh.load_surface_hop_config) or ""), "", "Example:", ""]
    doc += [*_docstring_example(sh), ""]
    doc += ["| key | default (left out) |", "|---|---|"]
    for key in sorted(sh.TOP):
        shown = _yaml(filled[key]) if key not in raw and key in filled else "given in the minimal config"
        if key == "swarm_size":
            shown += " (or `trajectories` where fewer)"
        if key in ("timestep_fs", "time_fs", "time_au"):
            shown = "alternative (exactly one of the time step keys and one of the length keys)"
        doc.append(f"| `{key}` | {shown} |")
    doc += ["", "Keys of `initial` by potential:", "", "| potential | keys |", "|---|---|"]
    doc += [f"| {k} | {', '.join(f'`{x}`' for x in sorted(v))} |" for k, v in sh.INITIAL.items()]
    return [*doc, ""]


def _sampling() -> list[str]:
    from nearsight.cli import sampling as sa

    raw = {
        "toy": {"surface": "double_well"},
        "cv": {"type": "distance", "atoms": [0, 1]},
        "umbrella": {"centres": [1.0, 2.0], "k": 1.0, "steps": 10},
        "output_dir": "out",
    }
    filled = _filled(sa.load_sampling_config, raw, "umbrella")
    doc = ["## Free-energy configs (`nearsight umbrella`, `nearsight metad`)", ""]
    doc += [*_docstring_example(sa), ""]
    doc += ["| section | keys |", "|---|---|"]
    doc += [f"| top level | {', '.join(f'`{k}`' for k in sorted(sa.TOP))} |"]
    md = filled["md"]
    doc += ["| `md` | " + ", ".join(f"`{k}`: {_yaml(md[k])}" for k in sorted(sa.MD)) + " |"]
    doc += [f"| `umbrella` | {', '.join(f'`{k}`' for k in sorted(sa.UMBRELLA))} |"]
    doc += [f"| `metad` | {', '.join(f'`{k}`' for k in sorted(sa.METAD))} |"]
    doc += [f"| `toy` ({s}) | {', '.join(f'`{k}`' for k in sorted(v))} |" for s, v in sa.TOY.items()]
    doc += [
        "",
        f"Defaults a minimal umbrella config gets: `umbrella.min_overlap` = {_yaml(filled['umbrella']['min_overlap'])}.",
    ]
    return [*doc, ""]


def config_markdown() -> str:
    """The configuration reference, rendered from the schemas in the source."""
    doc = [
        "# Configuration reference",
        "",
        "Generated at build time from the schemas in the source. Configs are YAML read with",
        "`yaml.safe_load`: a config alone never imports or runs code.",
        "",
        *_training_config(),
        *_equivariant(),
        *_longrange(),
        *_active_learning(),
        *_surface_hop(),
        *_sampling(),
    ]
    return "\n".join(doc) + "\n"


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
