#!/usr/bin/env python3
"""A new learning rule in Python alone: the node cell also reads the fraction of the lifetime elapsed.

    python3 examples/custom_rule.py                      # a few generations of configs/tiny.yaml (seconds)
    python3 examples/custom_rule.py --out DIR --generations 8
    python3 run_config.py configs/tiny.yaml --plugin examples/custom_rule.py --set rule.declaration=clocked

As a plugin (the last line; docs/running.md, "Your own code") the file is imported: the rule is registered, the
demo under ``if __name__ == "__main__":`` does not run.

The whole change is the declaration below: the standard rule (`metarl.core.rule.STANDARD`) with one input
more in ``node_network``, read from the source ``lifetime_fraction`` (``t / lifetime_steps``, one of
the built-in sources of `metarl.core.rule.SOURCES`; a new one is a function registered with
``@metarl.core.rule.register_source("name")``). The genome grows by the new input's rows (8 + 3 genes for
S=1, H=8), the spec assembles the new input, and a saved model records the declaration, so
`metarl.runs.io.load_model` reloads it with no code at all. The native kernel runs it: the cells' input
code is generated from the declaration and the sources' Python (`metarl.backends.codegen`; docs/extending.md).
From the scripts: ``python3 run_config.py configs/tiny.yaml --plugin examples/custom_rule.py --set
rule.declaration=clocked``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metarl import backends  # noqa: E402
from metarl.backends import lifetime  # noqa: E402
from metarl.config import load  # noqa: E402
from metarl.core.rule import STANDARD, Input, register_rule, with_input  # noqa: E402
from metarl.evolve.trainer import Trainer, new_run  # noqa: E402
from metarl.runs import io  # noqa: E402

# The new rule: the standard one, its node cell reading one more input.
CLOCKED = register_rule(with_input(STANDARD, "node_network", Input("elapsed", 1, "lifetime_fraction"),
                                   name="clocked"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    p.add_argument("--generations", type=int, default=4)
    args = p.parse_args()
    config = load(ROOT / "configs/tiny.yaml", [f"rule.declaration={CLOCKED.name}",
                                               f"ga.generations={args.generations}"])
    print(f"rule {CLOCKED.name} (fingerprint {CLOCKED.fingerprint}); native kernel: "
          f"{backends.NATIVE.declines(config) or 'runs it (generated from the declaration)'}")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "run"
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # a fall-back to the torch step would be said here
            trainer = Trainer(new_run(config), out)
            print(f"genes per individual: {trainer.layout.size} (the standard rule: "
                  f"{type(trainer.layout)(config.rule.signal_dim, config.rule.state_dim).size})")
            for _ in range(config.ga.generations):
                row = trainer.run_generation()
                print(f"generation {row['generation']}: best {row['best']:.3f}  mean {row['mean']:.3f}")
            model = io.load_model(out / "best_model.yaml")  # the file carries the declaration
            assert model.layout.rule == CLOCKED
            fitness = lifetime.evaluate(model.genome[None], model.layout, model.config, seed=model.seed or 0,
                                        generation=0)
        print(f"reloaded best_model.yaml: rule {model.layout.rule.name}, fitness {model.fitness:.3f} as saved, "
              f"{float(fitness[0]):.3f} on a new lifetime")


if __name__ == "__main__":
    main()
