"""The three command-line programs (``metarl-train``, ``metarl-show-env``, ``metarl-show-results``).

The repository's root scripts ``run_config.py``, ``show_environment.py`` and
``show_results.py`` call the same ``main`` functions.
"""
