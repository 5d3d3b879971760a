"""The three command-line programs (``metarl-train``, ``metarl-show-env``, ``metarl-show-results``).

The repository's root scripts ``run_config.py``, ``show_environment.py`` and
``show_results.py`` call the same ``main`` functions.
"""

from __future__ import annotations

import argparse

from metarl.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """Usage mistakes become one ``error: ...`` line like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see --help)")
