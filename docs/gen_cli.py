"""The command-line reference page (``reference/cli.md``), generated from
:func:`nearsight.cli.main.build_parser` by ``docs/hooks.py``: every subcommand with its usage and options."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def table_cell(text: Any) -> str:
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
        rows.append(f"| `{table_cell(name)}` | {shown} | {table_cell(text)} |")
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
        doc += [f"| [`{n}`](#nearsight-{n}) | {table_cell(h)} |" for n, _, h in commands]
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
