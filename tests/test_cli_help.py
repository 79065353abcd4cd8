"""Every option and argument of every `ksmith` command says what it is for."""

from __future__ import annotations

import argparse

from ksmith.cli import build_parser


def walk(parser: argparse.ArgumentParser, path: str):
    """(command path, action) for every action of `parser` and its sub-commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_option_has_help_text():
    missing = {
        f"{path} {'/'.join(a.option_strings) or a.dest}"
        for path, a in walk(build_parser(), "ksmith")
        if not (a.help or "").strip() or a.help == argparse.SUPPRESS
    }
    assert not missing, "options without help text: " + ", ".join(sorted(missing))


def test_every_sub_command_has_help_text():
    def commands(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {c.dest: c.help for c in action._choices_actions}
                for name, sub in action.choices.items():
                    yield f"{path} {name}", helps.get(name)
                    yield from commands(sub, f"{path} {name}")

    missing = [p for p, h in commands(build_parser(), "ksmith") if not (h or "").strip()]
    assert not missing, "commands without help text: " + ", ".join(missing)
