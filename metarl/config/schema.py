"""The config's schema: typed, frozen dataclasses, their sane ranges and validation.

The nested schema of SPEC (``env``, ``actor``, ``rule``, ``ga``) plus a ``runtime``
section for performance switches (they change results at most by float rounding, see
`RuntimeConfig`) and a ``logging`` section. The ``env`` simulation options are declared
once, in `metarl.envs.base.EnvOptions`, which `EnvConfig` extends. ``validate`` raises
`ConfigError` with one line naming the key; the helpers at the end keep hostile values
short in those lines.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
from dataclasses import dataclass, field
from typing import Any

from ..core.rule import REWARD_MEAN_TIME
from ..envs import ENVS, env_class
from ..envs.base import (
    ACTION_SIGNS,
    GOALS,
    INITS,
    INTEGRATORS,
    MAX_SWITCH_SPAN,
    REWARDS,
    BatchedEnv,
    EnvOptions,
    option_names,
)
from ..errors import ConfigError

PhysicalValue = float | list[float]
ANTITHETIC = (False, True, "motor", "goal", "both")
FITNESS = ("mean", "worst_motor")

# Sane ranges: beyond them a value is a typo or an attack, not an experiment (README, "Configuration").
MIN_DT, MAX_DT = 1e-6, 1.0  # s; below 1e-6 a float32 step barely moves the state, above 1 it is no integration
MAX_VALUE = 1e6  # physical parameters, torques, speeds, limits, learning rate, std deviations
MAX_COUNT = 10**9  # population, survivors, generations, lifetime steps, evaluations, chunk size
MAX_PATH = 4096  # longest accepted file path (ga.init_model)
MAX_WIDTH = 10**6  # neurons in one hidden layer
MAX_HIDDEN_LAYERS = 64
MAX_RULE_DIM = 1024  # signal_dim and state_dim
MAX_THREADS = 1024
MAX_SEED = 2**63 - 1  # the generators take a signed 64-bit seed
MAX_PLUGINS = 64  # entries of plugins: (metarl.plugins.MAX_PLUGINS)


@dataclass(frozen=True)
class _EnvName:
    """The first key of the ``env`` section (a base class of `EnvConfig` only to keep it first)."""

    name: str = "Pendulum"


@dataclass(frozen=True)
class EnvConfig(EnvOptions, _EnvName):
    """Environment: name, simulation options, physical parameters.

    The simulation options (``dt`` ... ``goal_switch``) are the fields of `EnvOptions`, declared
    there once with their defaults. Dataclasses order inherited fields from the last base to the
    first, so the keys read ``name``, the options, ``params``, as the YAML always had them.
    """

    params: dict[str, PhysicalValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """No check on construction (unlike `EnvOptions`): `validate` checks every key, naming it."""

    def validate(self, key: str) -> None:
        _choice(f"{key}.name", self.name, tuple(ENVS))  # the registered envs (`metarl.envs.register`)
        env = env_class(self.name)
        if isinstance(self.dt, list):
            if len(self.dt) != 2:
                raise ConfigError(f"{key}.dt: a range must be [min, max], got {_show(self.dt)}")
            for v in self.dt:
                _number(f"{key}.dt", v, MIN_DT, MAX_DT, shown=self.dt)
            if self.dt[0] > self.dt[1]:
                raise ConfigError(f"{key}.dt: a range must be [min, max] with min <= max, got {_show(self.dt)}")
        else:
            _number(f"{key}.dt", self.dt, MIN_DT, MAX_DT)
        _number(f"{key}.obs_noise", self.obs_noise, 0, MAX_VALUE)
        _choice(f"{key}.integrator", self.integrator, INTEGRATORS)
        _env_choice(f"{key}.reward", self.reward, REWARDS, env)
        _env_choice(f"{key}.init", self.init, INITS, env)
        _number(f"{key}.max_torque", self.max_torque, 0, MAX_VALUE)
        if self.max_speed is not None:
            _number(f"{key}.max_speed", self.max_speed, 0, MAX_VALUE, open_low=True)
        if self.action_sign not in ACTION_SIGNS:
            raise ConfigError(f"{key}.action_sign: must be 1, -1 or random, got {_show(self.action_sign)}")
        if self.goal not in GOALS:
            raise ConfigError(f"{key}.goal: must be 1, -1 or random, got {_show(self.goal)}")
        if isinstance(self.goal_switch, list):
            if len(self.goal_switch) != 2:
                raise ConfigError(f"{key}.goal_switch: a range must be [first, last], got {_show(self.goal_switch)}")
            for v in self.goal_switch:
                _integer(f"{key}.goal_switch", v, 0, MAX_COUNT, shown=self.goal_switch)
            if not 0 <= self.goal_switch[1] - self.goal_switch[0] <= MAX_SWITCH_SPAN:
                raise ConfigError(f"{key}.goal_switch: a range must be [first, last] with first <= last <= first + "
                                  f"2^24, got {_show(self.goal_switch)}")
        elif self.goal_switch is not None:
            _integer(f"{key}.goal_switch", self.goal_switch, 0, MAX_COUNT)
        _number(f"{key}.goal_switch_probability", self.goal_switch_probability, 0, 1)
        if self.episode_steps is not None:
            _integer(f"{key}.episode_steps", self.episode_steps, 1, MAX_COUNT)
        defaults = env.param_defaults
        for name, value in self.params.items():
            pkey = f"{key}.params.{_clip(name)}"
            if name not in defaults:
                raise ConfigError(f"{pkey}: unknown parameter for {self.name}{_suggest(name, defaults)}; "
                                  f"known: {', '.join(defaults)}")
            values = value if isinstance(value, list) else [value]
            if isinstance(value, list) and len(value) != 2:
                raise ConfigError(f"{pkey}: a range must be [min, max], got {_show(value)}")
            for v in values:
                # Friction (the pendulums' damping) may be zero; lengths, masses and gravity may not.
                _number(pkey, v, 0, MAX_VALUE, open_low=name not in env.may_be_zero, shown=value)
            if isinstance(value, list) and value[0] > value[1]:
                raise ConfigError(f"{pkey}: a range must be [min, max] with min <= max, got {_show(value)}")
        self.check_physics(key, env.param_defaults)

    def check_physics(self, key: str, defaults: Any) -> None:
        """A pendulum (lengths, masses, gravity) whose equation of motion overflows even in float64:
        ``gravity / length`` or ``max_torque / (mass length^2)`` infinite (a length of 1e-300) is refused naming the
        parameter, not left to fail the self-check as if the kernel were stale. (Beyond float32's range, a length
        of 1e-40, float32 lifetimes break down into non-finite fitness, which ranks last: it runs.)"""
        params = {**defaults, **self.params}
        lengths = [k for k in params if k.startswith("length")]
        masses = [k for k in params if k.startswith("mass")]
        if not lengths or not masses or "gravity" not in params:
            return

        def low(name: str) -> float:
            v = params[name]
            return float(min(v) if isinstance(v, list) else v)

        length, mass = min(lengths, key=low), min(masses, key=low)
        l_min, m_min = low(length), low(mass)
        gravity = params["gravity"]
        g_max = float(max(gravity) if isinstance(gravity, list) else gravity)
        inertia = m_min * l_min * l_min
        terms = {"gravity/length": g_max / l_min if l_min > 0 else math.inf,
                 "max_torque/(mass length^2)": max(self.max_torque, 1.0) / inertia if inertia > 0 else math.inf}
        name, value = max(terms.items(), key=lambda t: t[1])
        if not value < math.inf:
            blamed = length if name == "gravity/length" or abs(math.log10(l_min or 1e-320)) >= abs(
                math.log10(m_min or 1e-320)) else mass
            raise ConfigError(f"{key}.params.{blamed}: {_show(params[blamed])} makes the equation of motion overflow "
                              f"({name} is infinite even in float64): the spec itself is not finite, whatever "
                              f"computes it; choose a larger {blamed}")

    @property
    def obs_dim(self) -> int:
        """Observation size of the environment."""
        return env_class(self.name).observation_size()

    def make_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `metarl.envs.make` (everything but the name)."""
        return {**{name: getattr(self, name) for name in option_names()}, "params": dict(self.params)}


@dataclass(frozen=True)
class ActorConfig:
    """The stochastic actor network and the limits of its plastic parameters."""

    hidden: list[int] = field(default_factory=lambda: [8, 8])
    weight_limit: float = 4.0
    weight_init: float = 0.1
    sigma_limit: float = 1.0
    # The least noise scale: every update keeps sigma in [sigma_min, sigma_limit], exploration the rule cannot
    # switch off (0: none, SPEC's [0, sigma_limit]).
    sigma_min: float = 0.0
    sigma_init: float = 0.0
    learning_rate: float = 0.01
    # true: the rule's rate is learning_rate * env.dt / 0.05 (`metarl.core.step.learning_rates`): learning_rate is
    # then the rate per 0.05 s of simulated time, so a rule learns as fast per second at any time step.
    learning_rate_dt: bool = False

    def validate(self, key: str) -> None:
        if len(self.hidden) > MAX_HIDDEN_LAYERS:
            raise ConfigError(f"{key}.hidden: at most {MAX_HIDDEN_LAYERS} hidden layers, got {len(self.hidden)}")
        for i, n in enumerate(self.hidden):
            _integer(f"{key}.hidden[{i}]", n, 1, MAX_WIDTH)
        _number(f"{key}.weight_limit", self.weight_limit, 0, MAX_VALUE, open_low=True)
        _number(f"{key}.weight_init", self.weight_init, 0, MAX_VALUE)
        _number(f"{key}.sigma_limit", self.sigma_limit, 0, MAX_VALUE)
        _number(f"{key}.learning_rate", self.learning_rate, 0, MAX_VALUE)
        _number(f"{key}.sigma_min", self.sigma_min, 0, self.sigma_limit, high_name="sigma_limit")
        _number(f"{key}.sigma_init", self.sigma_init, 0, self.sigma_limit, high_name="sigma_limit")
        if self.sigma_min > self.sigma_init:
            raise ConfigError(f"{key}.sigma_min: {_show(self.sigma_min)} is above sigma_init "
                              f"({_show(self.sigma_init)}); the initial noise scale must be at least the least one "
                              "(set sigma_init too)")


@dataclass(frozen=True)
class RuleConfig:
    """The learning-rule network (three recurrent cells)."""

    signal_dim: int = 1
    state_dim: int = 8
    init_std: float = 0.1
    declaration: str = "standard"  # a registered rule declaration (metarl.core.rule.register_rule)
    # Seconds of simulated time: the time constant of the reward's running mean (trace reward.mean, what the
    # sources reward.change and reward.mean read); declarations without them ignore it.
    reward_mean_time: float = REWARD_MEAN_TIME

    def validate(self, key: str) -> None:
        from ..core.rule import RULES  # the registry of rule declarations (the example registers one)

        if not isinstance(self.declaration, str) or self.declaration not in RULES:
            raise ConfigError(f"{key}.declaration: unknown rule declaration {_show(self.declaration)}"
                              f"{_suggest(self.declaration, RULES)}; registered: {', '.join(RULES)} (a rule declared "
                              f"in Python is registered by importing the module that declares it; docs/extending.md)")
        _integer(f"{key}.signal_dim", self.signal_dim, 1, MAX_RULE_DIM)
        _integer(f"{key}.state_dim", self.state_dim, 0, MAX_RULE_DIM)  # 0: SPEC's stateless cells (H = 0)
        _number(f"{key}.init_std", self.init_std, 0, MAX_VALUE)
        _number(f"{key}.reward_mean_time", self.reward_mean_time, 0, MAX_VALUE, open_low=True)


@dataclass(frozen=True)
class GAConfig:
    """The genetic algorithm and how individuals are evaluated."""

    population_size: int = 10000
    num_survivors: int = 200
    generations: int = 10000
    lifetime_steps: int = 2000
    evals_per_individual: int = 1
    mutation_probability: float = 0.001
    mutation_strength: float = 0.1
    # Same actor/env draws for every individual of a generation (common random numbers),
    # so that ranking compares rules rather than luck. Off = SPEC's independent draws.
    common_random_numbers: bool = False
    # Evaluate in pairs of lifetimes with the same draws and one sign flipped: true or `motor`,
    # the motor direction (env.action_sign), so only a rule that finds the direction scores in
    # both; `goal`, the hidden goal (env.goal), so a rule blind to the reward scores the average
    # of the two goals. false = SPEC's single lifetimes.
    antithetic: bool | str = False
    # How the lifetimes make the fitness: `mean`, their mean (SPEC); `worst_motor`, the lower of the two motor
    # directions' means (antithetic motor or both: the same draws each way), so a rule is only as good as it is with
    # the motor it handles worse.
    fitness: str = "mean"
    # Warm start (e.g. a curriculum): generation 0 is this saved model's rule followed by mutated copies
    # of it, instead of Normal(0, rule.init_std^2). A path, relative to the current directory.
    init_model: str | None = None

    @property
    def flips(self) -> tuple[str, ...]:
        """The env options an antithetic group flips (``goal`` and/or ``action_sign``); () without antithetic."""
        if not self.antithetic:
            return ()
        return {"goal": ("goal",), "both": ("goal", "action_sign")}.get(str(self.antithetic), ("action_sign",))

    @property
    def group(self) -> int:
        """Lifetimes per antithetic group (same draws, every combination of the flipped signs); 1 without."""
        return 2 ** len(self.flips)

    def validate(self, key: str) -> None:
        for name in ("population_size", "num_survivors", "generations", "lifetime_steps",
                     "evals_per_individual"):
            _integer(f"{key}.{name}", getattr(self, name), 1, MAX_COUNT)
        if self.num_survivors > self.population_size:
            raise ConfigError(f"{key}.num_survivors: {self.num_survivors} exceeds "
                              f"population_size {self.population_size}")
        _number(f"{key}.mutation_probability", self.mutation_probability, 0, 1)
        _number(f"{key}.mutation_strength", self.mutation_strength, 0, MAX_VALUE)
        if self.antithetic not in ANTITHETIC:
            raise ConfigError(f"{key}.antithetic: must be true, false, motor, goal or both, "
                              f"got {_show(self.antithetic)}")
        if self.init_model is not None and (not isinstance(self.init_model, str) or not self.init_model.strip()
                                            or len(self.init_model) > MAX_PATH):
            raise ConfigError(f"{key}.init_model: must be the path of a saved model, got {_show(self.init_model)}")
        if self.fitness not in FITNESS:
            raise ConfigError(f"{key}.fitness: must be one of {', '.join(FITNESS)}, got {_show(self.fitness)}")
        if self.fitness == "worst_motor" and "action_sign" not in self.flips:
            raise ConfigError(f"{key}.fitness: worst_motor needs both motor directions on the same draws "
                              f"(ga.antithetic: motor or both), got antithetic {_show(self.antithetic)}")
        if self.evals_per_individual % self.group:
            what = "an even" if self.group == 2 else f"a multiple of {self.group} as"
            raise ConfigError(f"{key}.antithetic: needs {what} evals_per_individual, got {self.evals_per_individual}")


SEARCHERS = ("ga", "cma")


# pycma needs two recombination weights, and from 300 genes on its step-size rule (TPA) spends two samples a
# generation on the mean's shift: with 2 it has none left and stops with a traceback.
CMA_MIN_POPULATION = 3


@dataclass(frozen=True)
class SearchConfig:
    """Which searcher proposes the genomes (`metarl.evolve.searchers`): ``ga``, the genetic algorithm of the
    ``ga`` section, or ``cma``, CMA-ES from pycma (``pip install cma threadpoolctl``). Both score
    ``ga.population_size`` genomes per generation for ``ga.generations`` generations, each by
    ``ga.evals_per_individual`` lifetimes; ``cma`` ignores ``ga.num_survivors`` and ``ga.mutation_*``."""

    name: str = "ga"
    sigma0: float | None = None  # cma: initial step size; null = rule.init_std (generation 0 as the GA's)
    diagonal: bool = False  # cma: adapt only the covariance's diagonal (separable CMA-ES; faster in many genes)

    def validate(self, key: str) -> None:
        _choice(f"{key}.name", self.name, SEARCHERS)
        if self.sigma0 is not None:
            _number(f"{key}.sigma0", self.sigma0, 0, MAX_VALUE, open_low=True)
        if self.name == "ga" and (self.sigma0 is not None or self.diagonal):
            raise ConfigError(f"{key}: sigma0 and diagonal are options of name: cma, not of name: ga")


@dataclass(frozen=True)
class RuntimeConfig:
    """Performance switches. ``chunk_size`` and ``threads`` never change a result; ``native`` and
    ``compile`` choose the lifetime step, whose results differ only by float rounding."""

    chunk_size: int | None = None  # individuals per CPU chunk; null = automatic
    # torch.compile the lifetime step (falls back to eager); null = auto: when a generation has
    # at least 2e6 individual-steps (population_size * lifetime_steps), which repays compiling.
    compile: bool | None = None
    threads: int | None = None  # torch CPU threads (and native kernel threads); null = torch's default
    # The native C++ lifetime kernel on CPU (metarl/backends/native.py); null = auto: used when it builds, else
    # the torch step with a warning; true: an error if it cannot run; false: never.
    native: bool | None = None

    def validate(self, key: str) -> None:
        if self.chunk_size is not None:
            _integer(f"{key}.chunk_size", self.chunk_size, 1, MAX_COUNT)
        if self.threads is not None:
            _integer(f"{key}.threads", self.threads, 1, MAX_THREADS)


@dataclass(frozen=True)
class LoggingConfig:
    """What run_config.py reports; never changes a result."""

    every: int = 1  # generations between progress lines (the first and the last are always reported)
    tensorboard: bool = False  # also write TensorBoard scalars and histograms to <run>/tensorboard/
    histogram_every: int = 10  # generations between histograms of the population's genes
    snapshot_every: int | None = None  # generations between saved models in <run>/snapshots/; null = none

    def validate(self, key: str) -> None:
        _integer(f"{key}.every", self.every, 1, MAX_COUNT)
        _integer(f"{key}.histogram_every", self.histogram_every, 1, MAX_COUNT)
        if self.snapshot_every is not None:
            _integer(f"{key}.snapshot_every", self.snapshot_every, 1, MAX_COUNT)


@dataclass(frozen=True)
class EvaluationConfig:
    """The task a rule is judged on (``show_results.py MODEL --evaluate`` and ``--robustness``), where it differs
    from the training mix: ``env`` replaces those keys of the ``env`` section (``params`` key by key), and
    ``lifetime_steps`` the lifetime's length. Empty: the training task. Either way the evaluation covers every
    motor direction and hidden goal training drew (`Config.evaluation_task`)."""

    env: dict[str, Any] = field(default_factory=dict)  # e.g. {obs_noise: 0, params: {length: 1.0}, goal_switch: null}
    lifetime_steps: int | None = None  # null = ga.lifetime_steps

    def validate(self, key: str) -> None:
        names = [f.name for f in dataclasses.fields(EnvConfig) if f.name != "name"]
        for name in self.env:
            if name not in names:
                raise ConfigError(f"{key}.env.{_clip(name)}: unknown key{_suggest(name, names)}; "
                                  f"valid: {', '.join(names)}")
        if "params" in self.env and not isinstance(self.env["params"], dict):
            raise ConfigError(f"{key}.env.params: expected a mapping, got {_show(self.env['params'])}")
        if self.lifetime_steps is not None:
            _integer(f"{key}.lifetime_steps", self.lifetime_steps, 1, MAX_COUNT)


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    # Files or modules imported before the rest is read (`metarl.plugins`): they register rules and environments.
    # Files are recorded by absolute path; an empty list is left out of the YAML written.
    plugins: list[str] = field(default_factory=list)
    seed: int | None = 0
    device: str = "auto"
    env: EnvConfig = field(default_factory=EnvConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    rule: RuleConfig = field(default_factory=RuleConfig)
    ga: GAConfig = field(default_factory=GAConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def validate(self) -> None:
        from .. import plugins

        if len(self.plugins) > plugins.MAX_PLUGINS:
            raise ConfigError(f"plugins: at most {plugins.MAX_PLUGINS} plugins, got {len(self.plugins)}")
        for entry in self.plugins:
            plugins.check(entry)
        if self.seed is not None:
            _integer("seed", self.seed, 0, MAX_SEED)
        if self.device != "auto" and not _is_device(self.device):
            raise ConfigError(f"device: must be auto, cpu, cuda or cuda:N, got {_show(self.device)}")
        self.logging.validate("logging")
        self.env.validate("env")
        self.actor.validate("actor")
        self.rule.validate("rule")
        self.ga.validate("ga")
        self.search.validate("search")
        if self.search.name == "cma" and self.ga.population_size < CMA_MIN_POPULATION:
            raise ConfigError(f"ga.population_size: search.name: cma needs at least {CMA_MIN_POPULATION} samples a "
                              f"generation (its step-size rule spends two of them), got {self.ga.population_size}")
        self.runtime.validate("runtime")
        self.evaluation.validate("evaluation")
        for flipped in self.ga.flips:
            if getattr(self.env, flipped) == "random":
                raise ConfigError(f"ga.antithetic: {self.ga.antithetic} groups need a fixed env.{flipped} (1 or -1), "
                                  f"not random")

    @property
    def layer_sizes(self) -> list[int]:
        """Actor layer sizes ``[n_0, ..., n_L]`` (observation size first, action size 1 last)."""
        return [self.env.obs_dim, *self.actor.hidden, 1]

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (the YAML form); ``plugins`` only when there are any (files written without
        plugins are as before)."""
        data = dataclasses.asdict(self)
        if not data["plugins"]:
            del data["plugins"]
        return data

    def replace(self, **sections: Any) -> Config:
        """A copy with whole sections or top-level keys replaced."""
        return dataclasses.replace(self, **sections)


def _is_device(text: str) -> bool:
    if text == "cpu" or text == "cuda":
        return True
    return text.startswith("cuda:") and text[5:].isdigit()


def _number(key: str, value: float, low: float, high: float, *, open_low: bool = False,
            high_name: str | None = None, shown: Any = None) -> None:
    """``value`` must be finite and in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    inside = math.isfinite(value) and (low < value if open_low else low <= value) and value <= high
    if not inside:
        bound = f"{high_name}={_bound(high)}" if high_name else _bound(high)
        raise ConfigError(f"{key}: must be finite and in {'(' if open_low else '['}{_bound(low)}, {bound}], "
                          f"got {_show(value if shown is None else shown)}")


def _integer(key: str, value: int, low: int, high: int, *, shown: Any = None) -> None:
    """``value`` must be in ``[low, high]`` (the type, int, is checked on load)."""
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be an integer in [{_bound(low)}, {_bound(high)}], "
                          f"got {_show(value if shown is None else shown)}")


def _bound(value: float) -> str:
    """A range bound as people write it: 1, 0.5, 1e-06, 10^9, 2^63-1."""
    if value == MAX_SEED:
        return "2^63-1"
    if isinstance(value, int) and value >= 10**6 and str(value).rstrip("0") == "1":
        return f"10^{len(str(value)) - 1}"
    return f"{value:g}"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 40
_REPR.maxlevel = 2


def _show(value: Any) -> str:
    """A short, one-line form of a (possibly hostile: huge, deep, long) value for messages."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        if abs(value) < 10**15:
            return str(value)
        return f"{'-' if value < 0 else ''}2^{abs(value).bit_length() - 1}" if value.bit_length() > 1000 \
            else f"{float(value):.3g}"
    if isinstance(value, float):
        return repr(value) if abs(value) < 1e15 or not math.isfinite(value) else f"{value:.3g}"
    return _REPR.repr(value)


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: unknown value {_show(value)}{_suggest(value, allowed)}; "
                          f"valid: {', '.join(allowed)}")


def _env_choice(key: str, value: str, allowed: tuple[str, ...], env: type[BatchedEnv]) -> None:
    """`_choice` among ``allowed``, then among those ``env`` implements (its ``rewards`` or ``inits``)."""
    _choice(key, value, allowed)
    implemented = env.rewards if key.endswith(".reward") else env.inits
    if value not in implemented:
        raise ConfigError(f"{key}: {env.name} does not implement {_show(value)}; valid: {', '.join(implemented)}")


def _suggest(name: str, candidates: Any) -> str:
    if not isinstance(name, str) or len(name) > 100:  # no fuzzy matching of huge strings
        return ""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _clip(text: str) -> str:
    """``text`` shortened, and escaped as ``repr`` does if it holds anything but printable characters (a
    newline or a terminal escape code typed in a key never reaches the terminal raw)."""
    if not text.isprintable():
        text = repr(text)
    return text if len(text) <= 100 else f"{text[:60]}... ({len(text)} characters)"
