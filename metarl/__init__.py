"""metarl: evolve learning rules for stochastic actors with a genetic algorithm.

A small stochastic actor network controls batched pendulum environments; after every
step a learned rule (a tiny message-passing network, the genome) changes the actor's
weights, biases and noise levels. A genetic algorithm scores each rule by whole lifetimes
of freshly initialised actors, the population as one tensor batch.

Commands (installed with the package, or the scripts at the repository's root):

    metarl-train CONFIG.yaml          # run_config.py: evolve; writes a run folder
    metarl-show-env Pendulum          # show_environment.py: animate an environment
    metarl-show-results MODEL.yaml    # show_results.py: replay, plot, --evaluate a rule

Python API:

    metarl.config.load(path, overrides)               -> Config (typed, validated)
    metarl.core.rule.STANDARD, register_rule(...)     -> the learning rule's declaration (docs/extending.md)
    metarl.envs.make(name, batch, ...)                -> batched environment; envs.register(name, cls): a new task
    metarl.backends.lifetime.evaluate(genomes, layout, config, seed=, generation=)  -> fitness (P,)
    metarl.evolve.problem / searchers                 -> the ask/tell seam (docs/searchers.md)
    metarl.evolve.trainer.new_run(config), Trainer    -> the search loop (ask, evaluate, tell, hooks), checkpointed
    metarl.runs.io.load_model(path)                   -> SavedModel (genome, layout, config)
    metarl.analysis.evaluation.evaluate_rule(...)     -> the rule against its baselines

Packages, by concern (docs/architecture.md):

    core/      the rule's declaration (rule), genome, actor, the spec step (spec, step), random streams (rng)
    envs/      one environment per file, and the registry
    backends/  which code runs a lifetime (the choice: backends/__init__), compiled (torch.compile of the
               spec), native (the C++ kernel, kernel/), lifetime (chunks, self-check, fitness)
    evolve/    problem, searchers (the GA, CMA-ES), ga, trainer, stages (curricula), distributed (torchrun)
    analysis/  evaluation, controllers (the reference controller), robustness, plots, render, gym_rule
    runs/      model and checkpoint files (io), the CSV log and progress (logs), the run folder's lock
    cli/       the three commands (train, show_results, show_environment), their parsers and plumbing
    config/    the schema, loading, the reference page (docs/config.md)
    and resources (memory, checked before a run), shipped (configs and models by name), gym (Gymnasium
    ids), errors (the one-line errors), cpu (the CPU's feature flags).

``import metarl`` is light: the packages load on first use (``metarl.envs``, ``metarl.backends``, ...).
Where gymnasium is installed it also registers ``metarl/Pendulum-v0`` and ``metarl/DoublePendulum-v0``
(`metarl.gym`).
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# torch's OpenMP workers otherwise spin after each parallel operation, on the cores the native kernel's
# threads need (2 kernel threads ran at 0.5x of 1 on a 2-core machine with another busy process; passive:
# 1.0x). Read once, when torch loads: it applies where metarl is imported first (the scripts do).
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _pin_blas() -> None:
    """numpy's OpenBLAS chooses its kernels by CPU (SkylakeX on AVX-512 Intel, Haswell on AVX2 and Zen), and
    their sums round differently: full CMA-ES (pycma: eigendecomposition, matrix products) drifted by 3e-7
    from its second generation between an Intel Xeon and an AMD EPYC. Its Haswell kernels run on every
    x86-64 CPU with AVX2 and FMA, so metarl pins them there (docs/performance.md, "Same numbers on every
    CPU"). Read once, when numpy loads: it applies where metarl is imported first (the scripts do)."""
    from .cpu import cpu_flags

    if "numpy" not in _sys.modules and {"avx2", "fma"} <= (cpu_flags() or frozenset()):
        _os.environ["OPENBLAS_CORETYPE"] = "Haswell"


_pin_blas()

SUBMODULES = ("analysis", "backends", "cli", "config", "core", "cpu", "envs", "errors", "evolve", "gym",
              "resources", "runs", "shipped")


OPTIONAL = {"gym": "gymnasium"}  # submodule -> the optional package it needs


def __getattr__(name: str):
    """``metarl.envs`` and the other modules, imported on first access. A module whose optional package is missing
    is no attribute (AttributeError, so that ``help(metarl)`` and ``dir`` walk past it); importing it says why."""
    if name in SUBMODULES:
        import importlib

        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != OPTIONAL.get(name):
                raise
            raise AttributeError(f"metarl.{name} needs {e.name} (pip install '.[{e.name}]')") from None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *SUBMODULES})


def _register_gymnasium() -> None:
    """Register metarl's ids with gymnasium: now if it is imported already, else right after it is imported
    (an import hook), so that ``import metarl`` stays light (the scripts' start-up signal guard comes first)."""
    import importlib.abc
    import importlib.util

    def register() -> None:
        from .gym import register as register_ids

        register_ids()

    if "gymnasium" in _sys.modules:
        register()
        return

    class _AfterGymnasium(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):  # noqa: ANN001, ANN201 - importlib's protocol
            if fullname != "gymnasium":
                return None
            _sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            if spec is None or spec.loader is None:
                return spec
            loader, exec_module = spec.loader, spec.loader.exec_module

            def exec_then_register(module):  # noqa: ANN001, ANN202
                exec_module(module)
                register()

            loader.exec_module = exec_then_register  # type: ignore[method-assign]
            return spec

    if not any(type(f).__name__ == "_AfterGymnasium" for f in _sys.meta_path):
        _sys.meta_path.insert(0, _AfterGymnasium())


_register_gymnasium()
