"""The three command-line programs (``metarl-train``, ``metarl-show-env``, ``metarl-show-results``).

The repository's root scripts ``run_config.py``, ``show_environment.py`` and
``show_results.py`` call the same ``main`` functions.
"""

from __future__ import annotations

import argparse

from metarl.errors import UserError
from metarl.shipped import command


class ArgumentParser(argparse.ArgumentParser):
    """Usage mistakes become one ``error: ...`` line like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse quotes the value it could not read whole: a 5,000-digit --generations stays a short line.
        shown = message if len(message) <= 300 else f"{message[:200]}... ({len(message)} characters)"
        raise UserError(f"{shown} (see --help)")


def described(doc: str, script: str) -> str:
    """A script's docstring for ``--help``, its examples written with the command that was run
    (``python3 run_config.py`` or ``metarl-train``)."""
    return doc.replace(f"python3 {script}", command(f"python3 {script}"))
