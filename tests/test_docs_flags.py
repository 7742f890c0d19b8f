"""The configuration reference lists every flag of `serve`, in --help's order, with the
environment variable and the default the code declares; and the tools page names every flag of
`explain` and `simulate`. A flag added, renamed or given a new default fails here until the
docs say so."""

from __future__ import annotations

import argparse
import re

from ratelimitd import cli
from ratelimitd.app.settings import add_serve_arguments
from tests.conftest import REPO

DOCS = REPO / "docs"
# A row of the flag table: | flag | environment | default | meaning |
ROW = re.compile(r"\| (`--.*?) \| (.*?) \| (.*?) \| .* \|$")


def declared_rows() -> list[tuple[str, str, str]]:
    """(flag, environment, default) of every `serve` flag as the table writes them: the
    flags in backticks, the variable in backticks, and the default --help shows (in
    backticks unless it is a phrase; `unset` for none)."""
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser, {})
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        help_text = action.help or ""
        env = re.search(r"env (RATELIMITD_\w+)", help_text)
        default = re.search(r"default (.+)\]$", help_text)
        assert env, f"{action.option_strings}: --help names no variable"
        shown = default.group(1) if default and default.group(1) != "None" else "unset"
        rows.append(
            (
                " / ".join(f"`{flag}`" for flag in action.option_strings),
                f"`{env.group(1)}`",
                shown if " " in shown else f"`{shown}`",
            )
        )
    return rows


def documented_rows() -> list[tuple[str, str, str]]:
    """(flag, environment, default) of each row of the reference's flag table; the
    environment cell may add a note after the variable."""
    text = (DOCS / "configuration.md").read_text()
    rows = []
    for line in text.splitlines():
        if match := ROW.match(line):
            flag, env, default = match.groups()
            rows.append((flag, env.split(" ")[0], default))
    return rows


def test_the_flag_table_is_the_code_s() -> None:
    declared = declared_rows()
    assert len(declared) > 30
    expected = "\n".join(f"| {f} | {e} | {d} |" for f, e, d in declared)
    assert documented_rows() == declared, f"docs/configuration.md's rows should start:\n{expected}"


def test_the_tools_page_names_every_flag_of_explain_and_simulate() -> None:
    parser = cli.build_parser({})
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    page = (DOCS / "tools.md").read_text()
    # explain takes serve's flags too: the flag table has those.
    serve = {
        flag for action in commands.choices["serve"]._actions for flag in action.option_strings
    }
    missing = [
        f"{name} {flag}"
        for name in ("explain", "simulate")
        for action in commands.choices[name]._actions
        if action.help != argparse.SUPPRESS
        for flag in action.option_strings
        if flag.startswith("--") and flag not in serve and f"`{flag}" not in page
    ]
    assert missing == []
