"""docs/cli.md documents every command and option of ``tiendasync`` (as sqlite-utils does).

The test walks the argparse tree of :func:`tiendasync.cli.build_parser`:
each command needs its own ``### `tiendasync ...` `` section, and each of its
options (every option string, e.g. ``-v`` and ``--verbose``), positional
arguments and sub-commands must appear in that section.  The command lines
of the page's ```bash blocks must parse.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiendasync.cli import build_parser

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

_SECTION = re.compile(r"^### `(tiendasync[^`]*)`\s*$", re.M)


def commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``("tiendasync relay token add", parser)`` for every command of the tree."""

    def walk(
        parser: argparse.ArgumentParser, path: str
    ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")

    yield from walk(build_parser(), "tiendasync")


def sections() -> dict[str, str]:
    text = PAGE.read_text(encoding="utf-8")
    found = list(_SECTION.finditer(text))
    return {
        m.group(1): text[m.end() : found[i + 1].start() if i + 1 < len(found) else len(text)]
        for i, m in enumerate(found)
    }


def names_of(parser: argparse.ArgumentParser) -> list[str]:
    """What the section of ``parser`` must mention: options, positionals, sub-commands."""
    out: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            out.extend(action.choices)
        elif action.option_strings:
            out.extend(action.option_strings)
        else:
            out.append(str(action.metavar or action.dest))
    return out


def test_every_command_has_a_section() -> None:
    documented = sections()
    missing = [path for path, _ in commands() if path not in documented]
    assert not missing, f"docs/cli.md has no section for: {', '.join(missing)}"
    extra = set(documented) - {path for path, _ in commands()}
    assert not extra, f"docs/cli.md documents commands that do not exist: {sorted(extra)}"


@pytest.mark.parametrize("path", [path for path, _ in commands()])
def test_every_option_is_documented(path: str) -> None:
    parser = dict(commands())[path]
    section = sections().get(path, "")
    missing = [name for name in names_of(parser) if f"`{name}`" not in section]
    assert not missing, f"docs/cli.md, section {path}: undocumented {', '.join(missing)}"


def test_the_walk_sees_the_whole_tree() -> None:
    """The checks above cannot pass vacuously: the walk finds nested commands and options."""
    found = dict(commands())
    assert {"tiendasync relay token add", "tiendasync config set", "tiendasync sync"} <= set(found)
    assert "--token-file" in names_of(found["tiendasync sync"])
    assert "--count" in names_of(found["tiendasync queue resolve"])


@pytest.mark.parametrize(
    ("page", "at_least"), [("cli.md", 5), ("relay.md", 5), ("generations.md", 3)]
)
def test_example_command_lines_parse(page: str, at_least: int) -> None:
    text = (PAGE.parent / page).read_text(encoding="utf-8")
    lines = [
        line.split(" > ")[0]  # a redirection is the shell's, not the command's
        for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
        for line in block.splitlines()
        # a synopsis ([--optional], continued lines) is read, not run
        if line.startswith("tiendasync ") and not line.endswith("\\") and " [" not in line
    ]
    assert len(lines) >= at_least
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])  # SystemExit if wrong
        assert callable(getattr(args, "handler", None)), line
