#!/usr/bin/env python3
"""Replay, plot and evaluate a learned rule; plot the fitness curves of runs.

The program is `metarl/cli/show_results.py`; an installed metarl provides it as `metarl-show-results`.
"""

from metarl.cli import startup

if __name__ == "__main__":
    startup.run("show_results")  # a signal during the imports ends with one line, as it does later
