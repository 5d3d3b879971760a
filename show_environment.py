#!/usr/bin/env python3
"""Animate an environment in a window or to a GIF.

The program is `metarl/scripts/show_environment.py`; an installed metarl provides it as `metarl-show-env`.
"""

from metarl import startup

if __name__ == "__main__":
    startup.run("show_environment")  # a signal during the imports ends with one line, as it does later
