"""The config reference, docs/config.md, generated from the schema.

    python3 -m metarl.config.reference > docs/config.md
    python3 -m metarl.config.reference --write          # the same, into docs/config.md

Keys, types and defaults come from the dataclasses of `metarl.config.schema` (and
`metarl.envs.base.EnvOptions`); ranges from the schema's constants and choice tuples; meanings from
`MEANINGS` below. A schema key without a meaning is an error here, so the page cannot miss one;
tests/test_config_reference.py fails when docs/config.md is not what this prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from ..envs import ENVS
from ..envs.base import ACTION_SIGNS, GOALS, INITS, INTEGRATORS, REWARDS
from . import schema as S
from .legacy import LEGACY_KEYS

_COUNT = f"integer in [1, {S._bound(S.MAX_COUNT)}]"
_VALUE = f"finite, in [0, {S._bound(S.MAX_VALUE)}]"


def _choices(values: tuple) -> str:
    return " \\| ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in values)


# key -> (range, meaning)
MEANINGS: dict[str, tuple[str, str]] = {
    "plugins": (f"at most {S.MAX_PLUGINS} entries: paths of .py files (relative: to the current directory) or "
                f"module names",
                "user code imported before the rest of the config is read, to register rules, sources, traces and "
                "environments (docs/extending.md, \"Plugins\"); also `--plugin` on the scripts. Recorded in the run "
                "folder and its models with each file's absolute path, so --resume and show_results.py find them "
                "again; a missing plugin, or one that raises, is one error line naming it. Plugins run code: load "
                "configs and models from sources you trust"),
    "seed": (f"integer in [0, {S._bound(S.MAX_SEED)}], or null",
             "random seed of the whole run; null = draw one and record it in the run folder"),
    "device": ("auto \\| cpu \\| cuda \\| cuda:N", "auto = the GPU when there is one (cuda without CUDA warns and "
                                                   "uses the CPU)"),
    "env.name": (_choices(tuple(ENVS)), "the environment"),
    "env.dt": (f"finite, in [{S._bound(S.MIN_DT)}, {S._bound(S.MAX_DT)}] s, or [min, max]",
               "integration step; a range is drawn per individual (docs/robustness.md)"),
    "env.integrator": (_choices(INTEGRATORS), "integration method"),
    "env.reward": (_choices(REWARDS), "height: sum of 1 - cos(theta_i); height_delta: its change, drops x1.1; spin: "
                                      "the first link's angular speed (rad/s); gym: Gymnasium Pendulum-v1's "
                                      "-(angle from upright^2 + 0.1 omega^2) per link - 0.001 torque^2, of the "
                                      "state before the step (as Gymnasium)"),
    "env.init": (_choices(INITS), "start state: up (almost upright, falls), down (hanging at rest), random, "
                                  "near_up (within 0.05 rad and 0.05 rad/s of upright)"),
    "env.max_torque": (_VALUE, "the action in [-1, 1] times this is the motor's torque (N·m)"),
    "env.max_speed": (f"finite, in (0, {S._bound(S.MAX_VALUE)}], or null",
                      "angular-speed clamp after each step; null = no clamp"),
    "env.action_sign": (_choices(ACTION_SIGNS), "motor direction; random = ±1 per individual"),
    "env.goal": (_choices(GOALS), "hidden goal, the reward's sign; random = ±1 per individual"),
    "env.goal_switch": (f"integer in [0, {S._bound(S.MAX_COUNT)}], a range [first, last] of such (last - first "
                        f"<= 2^24), or null",
                        "reversal: the goal flips from this step number on; a range: a step drawn per individual "
                        "(uniform over the integers first..last, after every other draw); null = never"),
    "env.goal_switch_probability": ("finite, in [0, 1]",
                                    "share of lifetimes that reverse at goal_switch, drawn per individual; the "
                                    "others keep their goal (evaluations reverse every lifetime)"),
    "env.episode_steps": (f"{_COUNT}, or null", "episodes: the env resets every N steps (random inits drawn again), "
                                                "the actor and rule keep what they learned; null = one episode"),
    "env.obs_noise": (_VALUE, "sensor noise: std of Gaussian noise on what the actor and the rule observe (and the "
                              "reference controller in evaluations), per individual; 0 = none (docs/robustness.md)"),
    "env.params": (f"each a number or [min, max], {_VALUE} (lengths, masses, gravity > 0)",
                   "physical parameters, a scalar or a range sampled per individual; defaults below"),
    "actor.hidden": (f"at most {S.MAX_HIDDEN_LAYERS} sizes, each in [1, {S._bound(S.MAX_WIDTH)}]",
                     "hidden layer sizes; input and output sizes come from the env; [] = one tanh layer"),
    "actor.weight_limit": (f"finite, in (0, {S._bound(S.MAX_VALUE)}]", "weights and biases clipped to ±weight_limit"),
    "actor.weight_init": (_VALUE, "initial W, b ~ Normal(0, (weight_init * weight_limit)^2)"),
    "actor.sigma_limit": (_VALUE, "noise scales clipped to [sigma_min, sigma_limit]"),
    "actor.sigma_min": ("finite, in [0, sigma_limit]", "the least noise scale: exploration the rule cannot switch "
                                                        "off; 0 = none (SPEC's [0, sigma_limit])"),
    "actor.sigma_init": ("finite, in [sigma_min, sigma_limit]", "initial noise scale"),
    "actor.learning_rate": (_VALUE, "scale of the rule's updates"),
    "actor.learning_rate_dt": ("true \\| false", "true: the rate is learning_rate * env.dt / 0.05, a rate per 0.05 s "
                                                 "of simulated time rather than per step (docs/robustness.md)"),
    "rule.declaration": ("a registered rule declaration (standard, reward_change, or one registered in Python)",
                         "what the rule's cells read and update (docs/extending.md); the standard one is SPEC's"),
    "rule.signal_dim": (f"integer in [1, {S.MAX_RULE_DIM}]", "S, size of the backward signal"),
    "rule.state_dim": (f"integer in [0, {S.MAX_RULE_DIM}]", "H, recurrent state size of every cell; 0 = stateless"),
    "rule.init_std": (_VALUE, "initial population ~ Normal(0, init_std^2)"),
    "rule.reward_mean_time": (f"finite, in (0, {S._bound(S.MAX_VALUE)}] s",
                              "time constant of the reward's running mean (trace reward.mean: the sources "
                              "reward.change and reward.mean; docs/extending.md); ignored by declarations "
                              "without them"),
    "ga.population_size": (_COUNT, "individuals per generation"),
    "ga.num_survivors": (f"{_COUNT}, at most population_size", "elites, kept unmutated (and re-evaluated)"),
    "ga.generations": (_COUNT, "generations of the run"),
    "ga.lifetime_steps": (_COUNT, "steps of a lifetime; fitness = reward summed over it ..."),
    "ga.evals_per_individual": (_COUNT, "... averaged over this many lifetimes (antithetic: a multiple of 2; "
                                        "4 for both)"),
    "ga.mutation_probability": ("finite, in [0, 1]", "probability that a child's gene is mutated"),
    "ga.mutation_strength": (_VALUE, "std deviation of a mutation"),
    "ga.common_random_numbers": ("true \\| false", "true: every individual of a generation gets the same draws"),
    "ga.antithetic": (_choices(S.ANTITHETIC), "true or motor: lifetimes in pairs with opposite motor directions; "
                                              "goal: pairs with opposite hidden goals; both: groups of four, "
                                              "each goal with each motor direction"),
    "ga.fitness": (_choices(S.FITNESS), "mean: the lifetimes' mean; worst_motor: the lower of the two motor "
                                        "directions' means (needs antithetic motor or both)"),
    "ga.init_model": (f"a path (at most {S.MAX_PATH} characters), a shipped model's name, or null",
                      "warm start: generation 0 = this model's rule and mutated copies; null = Normal(0, init_std^2)"),
    "search.name": (_choices(S.SEARCHERS), "what proposes the genomes: ga = the GA above; cma = CMA-ES from pycma "
                                           "(pip install cma threadpoolctl), ga.population_size samples per generation "
                                           "([searchers](searchers.md))"),
    "search.sigma0": (f"finite, in (0, {S._bound(S.MAX_VALUE)}], or null",
                      "cma: initial step size (mean 0, or ga.init_model's genome); null = rule.init_std"),
    "search.diagonal": ("true \\| false", "cma: adapt only the covariance's diagonal (separable CMA-ES)"),
    "runtime.chunk_size": (f"{_COUNT}, or null", "individuals per CPU chunk (null = automatic; CUDA: the whole "
                                                 "population); never changes results"),
    "runtime.compile": ("true \\| false \\| null", "torch.compile the torch step; null = auto (>= 2e6 "
                                                   "individual-steps per generation)"),
    "runtime.threads": (f"integer in [1, {S.MAX_THREADS}], or null",
                        "CPU threads of torch and the native kernel (null = torch's default); never changes results"),
    "runtime.native": ("true \\| false \\| null", "native C++ kernel on CPU; null = used if it builds, else warn and "
                                                  "use torch; true = an error if it cannot run"),
    "logging.every": (_COUNT, "generations between progress lines (--log-every)"),
    "logging.tensorboard": ("true \\| false", "TensorBoard event files in RUN/tensorboard/ (--tensorboard)"),
    "logging.histogram_every": (_COUNT, "generations between histograms of the population's genes"),
    "logging.snapshot_every": (f"{_COUNT}, or null",
                               "every N generations (and the last) the searcher's best guess saved as "
                               "RUN/snapshots/gen_NNNNNN.yaml, to pick a model from anywhere in the run; null = none"),
    "evaluation.env": ("a mapping of env keys (not name) to values in their ranges; params key by key",
                       "the task show_results.py --evaluate and --robustness judge the rule on, where it differs "
                       "from the training mix (e.g. {obs_noise: 0, params: {length: 1.0}, goal_switch: null}); "
                       "{} = the training task. Every motor direction and hidden goal training drew is evaluated "
                       "either way (--set overrides any of it)"),
    "evaluation.lifetime_steps": (f"{_COUNT}, or null", "lifetime length of the evaluation; null = ga.lifetime_steps"),
}


def keys() -> list[tuple[str, Any, Any]]:
    """Every key of the schema as ``(dotted key, type, default)``, in the order of the dataclasses."""
    out = []

    def walk(cls: type, prefix: str, instance: Any) -> None:
        for f in dataclasses.fields(cls):
            value = getattr(instance, f.name)
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(type(value), f"{key}.", value)
            else:
                out.append((key, f.type, value))

    walk(S.Config, "", S.Config())
    return out


def _default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def shipped_configs() -> list[tuple[str, str]]:
    """``(path, first comment line)`` of every shipped config, repository-relative."""
    from ..shipped import configs

    rows = []
    for path in configs().values():
        root = path.parents[1] if path.parent.name == "configs" else path.parents[2]
        comment = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")),
                       "")
        rows.append((path.relative_to(root).as_posix(), comment))
    return sorted(rows)


def render() -> str:
    """The whole page (Markdown)."""
    lines = ["# Configuration reference", "",
             "<!-- Generated by `python3 -m metarl.config.reference --write` from metarl/config/schema.py; "
             "do not edit. -->", "",
             "YAML, loaded into typed, frozen dataclasses (`metarl/config/`). Unknown keys (with the closest valid "
             "key suggested), wrong types, non-finite numbers and values outside their range are rejected before "
             "any work with one `error:` line naming the key ([errors](errors.md)); an empty file is an error, `{}` "
             "means all defaults (SPEC's GPU-sized job: the program says so before it starts on a CPU). "
             "`--set section.key=value` overrides any key.", "",
             "| key | type | default | range | meaning |", "| --- | --- | --- | --- | --- |"]
    missing = []
    for key, kind, default in keys():
        if key not in MEANINGS:
            missing.append(key)
            continue
        span, meaning = MEANINGS[key]
        kind = str(kind).replace("|", "\\|")
        lines.append(f"| `{key}` | `{kind}` | `{_default(default)}` | {span} | {meaning} |")
    extra = set(MEANINGS) - {k for k, _, _ in keys()}
    if missing or extra:
        raise RuntimeError(f"config reference out of date with the schema: undocumented {missing}, "
                           f"no longer in the schema {sorted(extra)}")
    lines += ["", "Physical parameters (`env.params`) and their defaults:", ""]
    for name, cls in ENVS.items():
        lines.append(f"- {name}: " + ", ".join(f"`{k}` {v}" for k, v in cls.param_defaults.items()))
    from ..evolve.stages import CONFIG_KEYS, STAGE_KEYS

    lines += ["", "## Multi-stage configs", "",
              "A config with `stages:` runs a curriculum as one command and one run folder (docs/running.md, "
              "\"Multi-stage configs\"): the file's other keys are the base config, and each stage is a mapping of "
              "these keys and its own overrides of the base (" + ", ".join(f"`{k}`" for k in CONFIG_KEYS) +
              "; nested or dotted), each stage after the first warm-started from the model the stage before it "
              "shipped:", "", "| key | meaning |", "| --- | --- |"]
    lines += [f"| `{key}` | {meaning} |" for key, meaning in STAGE_KEYS.items()]
    lines += ["", "## The original project's flat configs", "",
              "Configs of the original project (flat keys, as `configs/original_flat.yaml`) run unchanged; "
              "`--set` takes flat keys for them. Each flat key and the key it becomes:", ""]
    lines += [f"- `{flat}` -> " + (f"`{'.'.join(target)}`" if target else "ignored")
              for flat, target in LEGACY_KEYS.items()]
    lines += ["", "## Shipped configs", "",
              "By name or by path (`python3 run_config.py base`, `metarl-train pendulum_swingup`); the first comment "
              "line of each:", "", "| config | what |", "| --- | --- |"]
    lines += [f"| `{path}` | {comment} |" for path, comment in shipped_configs()]
    return "\n".join(lines) + "\n"


PAGE = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m metarl.config.reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"write {PAGE} instead of printing")
    args = p.parse_args(argv)
    text = render()
    if args.write:
        PAGE.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
