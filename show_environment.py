#!/usr/bin/env python3
"""Animate an environment in a window or to a GIF.

The program is `metarl/cli/show_environment.py`; an installed metarl provides it as `metarl-show-env`.
"""

from metarl.cli import startup

if __name__ == "__main__":
    startup.run("show_environment")  # a signal during the imports ends with one line, as it does later
