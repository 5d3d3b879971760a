"""metarl: evolve learning rules for stochastic actors with a genetic algorithm."""

__version__ = "0.1.0"
