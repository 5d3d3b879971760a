#!/usr/bin/env python3
"""Evolve a learning rule with the genetic algorithm described by a YAML config.

The program is `metarl/cli/train.py`; an installed metarl provides it as `metarl-train`.
"""

from metarl.cli import startup

if __name__ == "__main__":
    startup.run("train")  # a signal during the imports ends with one line, as it does later
