"""Errors caused by user input: the scripts print them as one line, never a traceback."""


class UserError(Exception):
    """Bad input (config, model file, CLI argument); the message names the problem."""


class ConfigError(UserError):
    """An invalid configuration value or key."""


class ModelFileError(UserError):
    """A missing, corrupt or incompatible saved model, run folder or checkpoint."""


class NonFiniteError(UserError):
    """Every individual of a generation has a non-finite fitness: the run cannot rank anything."""
