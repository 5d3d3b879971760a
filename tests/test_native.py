"""The native lifetime kernel (`metarl.backends.native`) against the plain reference and itself.

Its rule steps on given inputs are checked with the other paths in `test_fast_path.py`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import warnings

import pytest
import torch
from conftest import assert_close, fitness, genomes, needs_native, small_config

from metarl import backends, envs
from metarl.backends import lifetime, native
from metarl.config import EnvConfig, RuntimeConfig
from metarl.core import rng
from metarl.core.genome import CELLS, GenomeLayout
from metarl.envs.base import EnvOptions


@pytest.mark.parametrize("name,low,high", [("tanh", -12.0, 12.0), ("tanh", -1e-3, 1e-3), ("sin", -10.0, 10.0),
                                           ("cos", -10.0, 10.0), ("log", 1e-7, 1.0), ("exp", -20.0, 40.0)])
@needs_native
def test_native_elementary_functions_are_within_their_ulp_bounds(name: str, low: float, high: float) -> None:
    # Cephes exp/log/sin/cos: 2 ulp. tanh is Eigen's rational (no exp, one division): 5 ulp (measured 4.6).
    bound = 5 if name == "tanh" else 2
    x = torch.linspace(low, high, 160_000)
    want = getattr(torch, name)(x.double())
    ulp = torch.nextafter(want.float().abs(), torch.tensor(float("inf"))).double() - want.float().abs().double()
    err = (native.elementwise(name, x).double() - want).abs()
    assert (err <= bound * ulp).all(), (name, float((err / ulp).max()))


@needs_native
def test_native_tanh_keeps_nan_and_saturates() -> None:
    x = torch.zeros(1024)
    x[:6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 7.9, 8.0, -100.0])
    y = native.elementwise("tanh", x)
    assert y[0].isnan()
    assert y[1:3].tolist() == [1.0, -1.0] and y[4:6].tolist() == [1.0, -1.0]
    assert 0.99999 < y[3] < 1.0


ENV_CASES = [
    ("Pendulum", {}),
    ("DoublePendulum", {}),
    ("Pendulum", {"integrator": "euler", "reward": "height_delta", "max_speed": None}),
    ("DoublePendulum", {"reward": "height_delta", "init": "random", "action_sign": "random"}),
    ("Pendulum", {"init": "down", "action_sign": -1, "params": {"length": [0.5, 1.5], "mass": [0.8, 1.2]}}),
    # generated programs the shipped models do not pin: the gym reward on two links, spin with a drawn reversal
    ("DoublePendulum", {"reward": "gym", "integrator": "euler", "dt": [0.02, 0.05]}),
    ("Pendulum", {"reward": "spin", "obs_noise": 0.05, "goal": "random", "goal_switch": [5, 20], "max_torque": 2.5}),
]


@needs_native
@pytest.mark.parametrize("env,options", ENV_CASES)
@pytest.mark.slow
def test_native_lifetimes_match_reference(env: str, options: dict) -> None:
    config = small_config(env, steps=30, native=True)
    config = config.replace(env=dataclasses.replace(EnvConfig(name=env), **options))
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 20), rng.individual_keys(3, 0, 0, torch.arange(20))
    want, want_trace = lifetime.run_lifetimes(g, layout, config, keys, backend="spec", trace=True)
    got, got_trace = lifetime.run_lifetimes(g, layout, config, keys, trace=True)
    # Closed loop: the env amplifies rounding differences (the double pendulum is chaotic).
    assert_close(got, want, 1e-3)
    assert_close(got_trace, want_trace, 1e-3)
    assert_close(got_trace.sum(dim=1, dtype=torch.float64), got, 1e-6)


@needs_native
@pytest.mark.parametrize("hidden,s_dim,h_dim", [([100, 3], 1, 8), ([16, 4, 12], 2, 3), ([9, 5], 1, 0)])
@pytest.mark.slow
def test_native_other_shapes_match_reference(hidden: list[int], s_dim: int, h_dim: int) -> None:
    config = small_config(hidden=hidden, s_dim=s_dim, h_dim=h_dim, steps=30, native=True)
    layout = GenomeLayout(s_dim, h_dim)
    g, keys = genomes(layout, 20), rng.individual_keys(7, 0, 0, torch.arange(20))
    want = lifetime.run_lifetimes(g, layout, config, keys, backend="spec")[0]
    assert_close(lifetime.run_lifetimes(g, layout, config, keys)[0], want, 1e-4)


@needs_native
@pytest.mark.parametrize("conditions", [lifetime.Conditions(plastic=False), lifetime.Conditions(zero_reward=True)])
@pytest.mark.slow
def test_native_conditions_match_reference(conditions: lifetime.Conditions) -> None:
    config = small_config(steps=30, native=True)
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 20), rng.individual_keys(4, 0, 0, torch.arange(20))
    want = lifetime.run_lifetimes(g, layout, config, keys, backend="spec", conditions=conditions)[0]
    assert_close(lifetime.run_lifetimes(g, layout, config, keys, conditions=conditions)[0], want, 1e-4)


@needs_native
def test_sigma_min_is_a_floor_that_every_backend_keeps() -> None:
    # actor.sigma_min: every update leaves sigma in [sigma_min, sigma_limit], on the spec and in the kernel alike.
    floor = 0.15
    base = small_config(steps=30, native=True)
    config = base.replace(actor=dataclasses.replace(base.actor, sigma_min=floor, sigma_init=0.2))
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 20), rng.individual_keys(5, 0, 0, torch.arange(20))
    sigmas = {}
    for backend in ("spec", "native"):
        run = lifetime.Lifetime(g, layout, config, keys, backend=backend)
        run.run(30, torch.zeros(20, dtype=torch.float64))
        sigmas[backend] = torch.cat([s.flatten() for s in run.actor.sigmas])
        assert float(sigmas[backend].min()) == pytest.approx(floor, abs=1e-7), backend  # reached, never passed
    assert_close(sigmas["native"], sigmas["spec"], 1e-4)
    # Without the floor the same rule takes some sigmas below it: the floor is what kept them.
    free = lifetime.Lifetime(g, layout, config.replace(actor=dataclasses.replace(config.actor, sigma_min=0.0)), keys,
                             backend="native")
    free.run(30, torch.zeros(20, dtype=torch.float64))
    assert float(torch.cat([s.flatten() for s in free.actor.sigmas]).min()) < floor - 0.05
    assert_close(fitness(config, g, keys), fitness(config, g, keys, backend="spec"), 1e-3)


@needs_native
def test_native_steps_equal_one_call_and_see_assigned_state() -> None:
    config = small_config(native=True, pop=5)
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 5), rng.individual_keys(6, 0, 0, torch.arange(5))
    a = lifetime.Lifetime(g, layout, config, keys, backend="native")
    b = lifetime.Lifetime(g, layout, config, keys, backend="native")
    total, trace = torch.zeros(5, dtype=torch.float64), torch.zeros(12, 5)
    a.run(12, total, trace)
    assert torch.equal(torch.stack([b.step() for _ in range(12)]), trace)
    assert torch.equal(a.env.state, b.env.state)
    for x, y in zip(a.actor.weights, b.actor.weights, strict=True):
        assert torch.equal(x, y)
    # Assigning the env state takes effect, as on the torch paths.
    torch_life = lifetime.Lifetime(g, layout, config, keys)
    torch_life.run(12, torch.zeros(5, dtype=torch.float64))
    upright = torch.tensor([[3.1, 0.0]]).expand(5, 2)
    a.env.state = upright
    torch_life.env.state = upright
    assert_close(a.step(), torch_life.step(), 1e-4)


def test_native_auto_falls_back_with_a_warning_and_true_is_an_error(monkeypatch) -> None:
    # A compiler that does not exist, and a rule shape no other test builds (kernels are built once per
    # shape and process): the kernel cannot be built.
    monkeypatch.setenv("CXX", "metarl-no-such-compiler")
    config = small_config(pop=4, steps=5, s_dim=3, h_dim=5)
    auto = config.replace(runtime=RuntimeConfig(native=None))
    layout = GenomeLayout(3, 5)
    g, keys = genomes(layout, 4), rng.individual_keys(0, 0, 0, torch.arange(4))
    with pytest.warns(UserWarning, match="CXX=metarl-no-such-compiler was not found"):
        got = fitness(auto, g, keys)
    assert torch.equal(got, fitness(config, g, keys))  # the spec
    with pytest.raises(native.NativeUnavailable, match="runtime.native is true"):
        fitness(config.replace(runtime=RuntimeConfig(native=True)), g, keys)


def test_without_a_compiler_a_large_config_warns_once_and_runs_the_spec(monkeypatch) -> None:
    # A compiler path and a rule shape (S=2, H=7) no other test uses: kernels and warnings are per process.
    monkeypatch.setenv("CXX", "/nonexistent/metarl-large-c++")
    big = small_config(pop=10_000, s_dim=2, h_dim=7).replace(runtime=RuntimeConfig(native=None, compile=None))
    big = big.replace(ga=dataclasses.replace(big.ga, lifetime_steps=2000))
    assert big.ga.population_size * big.ga.lifetime_steps >= backends.COMPILE_MIN_WORK  # big enough to compile,
    with pytest.warns(UserWarning) as caught:  # but torch.compile on CPU needs the compiler too
        assert backends.select_backend(big, torch.device("cpu")).name == "spec"
        assert backends.select_backend(big, torch.device("cpu")).name == "spec"
    assert [str(w.message) for w in caught] == ["native lifetime kernel not used (the C++ compiler "
                                                "CXX=/nonexistent/metarl-large-c++ was not found); using the torch "
                                                "step"]


@needs_native
def test_native_is_not_used_where_it_cannot_run() -> None:
    config = small_config(native=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.select_backend(config, torch.device("cpu"), torch.float32) is backends.NATIVE
        assert backends.select_backend(config, torch.device("cpu"), torch.float64) is backends.SPEC
        assert backends.select_backend(config.replace(runtime=RuntimeConfig(native=False)), torch.device("cpu"),
                                       torch.float32) is backends.SPEC
    prog = native.default_program(1)
    assert native.supported([3, *[8] * 9, 1], prog, 1, 8) is not None  # 10 layers
    assert native.supported([5, 8, 1], prog, 1, 8) == "the actor reads 5 observations, the environment gives 3"
    assert native.supported([3, 8, 8, 1], prog, 1, 8) is None


def test_native_kernel_reads_the_genome_map_and_rejects_one_it_was_not_built_for() -> None:
    layout = GenomeLayout(1, 8)
    genome_map = native.GenomeMap.of(layout)
    assert [getattr(genome_map, c).w_state for c in ("reward", "node", "connection")] == \
        [layout.slices[name, "w_state"][0].start for name in CELLS]
    assert (genome_map.connection.inputs, genome_map.connection.outputs, genome_map.size) == (13, 2, layout.size)
    lib = native.library(1, 8)
    options = native.Options.of(EnvOptions(), native.default_program(1), weight_limit=4.0, sigma_limit=1.0)

    def call(m: native.GenomeMap) -> int:
        return lib.metarl_rule_steps(native.Network.of([3, 5, 1]), options, m, native.Buffers(), 16, 0, None, None,
                                     None)

    assert call(genome_map) == -5  # the map fits this build; the (empty) buffers are then refused
    wrong_shape = native.GenomeMap.of(layout)
    wrong_shape.node.outputs += 1
    beyond = native.GenomeMap.of(layout)
    beyond.connection.b_output = layout.size
    assert call(wrong_shape) == -3 and call(beyond) == -3
    options.n_scalars += 1  # options made for another program
    assert call(genome_map) == -2


@needs_native
def test_any_registered_environment_is_generated_and_one_with_no_vector_form_is_declined_by_name() -> None:
    # Every shipped environment, a subclass with its parameters in another order, and one whose dynamics need an
    # op the generator lacks: generated from the Python (the library states the digest of what it was built from),
    # or declined in one line naming the op.
    from metarl.core.rule import STANDARD
    for name in ("Pendulum", "DoublePendulum"):
        env = envs.make(name, 1)
        prog = native.program(STANDARD, env, 1)
        assert (prog.env, prog.n_state, prog.n_params) == (name, env.state_size(), len(env.param_defaults))
        sizes = (ctypes.c_int64 * 5)()
        assert native.library(1, 8, prog=prog).metarl_program(sizes).decode() == prog.digest
        assert list(sizes)[:3] == [prog.n_state, prog.n_obs, prog.n_params]
    reversed_params = dict(reversed(envs.Pendulum.param_defaults.items()))
    reordered = type("Reordered", (envs.Pendulum,), {"param_defaults": reversed_params, "name": "Reordered"})
    assert native.declines(STANDARD, reordered(1, {k: torch.ones(1) for k in reversed_params}, EnvOptions()), 1) \
        is None

    class Twisted(envs.Pendulum):
        name = "Twisted"

        def derivatives(self, state: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
            return torch.stack((state[:, 1], torch.atan2(state[:, 0], state[:, 1]) + torque), dim=1)

    twisted = Twisted(1, {k: torch.ones(1) for k in envs.Pendulum.param_defaults}, EnvOptions())
    assert native.declines(STANDARD, twisted, 1) == (
        "the native kernel cannot generate the rule 'standard' with the environment Twisted: the environment Twisted: "
        "torch.atan2 (the generator has no vector form of it)")
    with pytest.raises(native.NativeUnavailable, match="torch.atan2"):
        native.program(STANDARD, twisted, 1)


@needs_native
def test_an_env_reading_the_step_number_runs_natively_and_a_python_branch_on_it_is_declined() -> None:
    # The step number is a runtime value of the generated code (never baked in at the step the tracer saw).
    from metarl.core.rule import STANDARD

    class Doubling(envs.Pendulum):
        name = "Doubling"

        def reward(self, start, state, height, prev_height, t, torque=None):  # type: ignore[no-untyped-def]
            base = super().reward(start, state, height, prev_height, t, torque)
            return base * torch.where(torch.as_tensor(t) < 10, 1.0, 2.0)

    class Branchy(envs.Pendulum):
        name = "Branchy"

        def reward(self, start, state, height, prev_height, t, torque=None):  # type: ignore[no-untyped-def]
            base = super().reward(start, state, height, prev_height, t, torque)
            return base * 2 if t > 10 else base

    params = {k: torch.ones(1) for k in envs.Pendulum.param_defaults}
    assert native.declines(STANDARD, Doubling(1, params, EnvOptions()), 1) is None
    assert native.declines(STANDARD, Branchy(1, params, EnvOptions()), 1).endswith(
        "the environment Branchy: a Python branch on a value computed in the step (use torch.where)")
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 4), rng.individual_keys(0, 0, 0, torch.arange(4))
    envs.register("Doubling", Doubling)
    try:
        config = small_config(steps=20).replace(env=EnvConfig(name="Doubling", init="down"))
        rewards = {backend: lifetime.run_lifetimes(g, layout, config, keys, backend=backend, trace=True)[1]
                   for backend in ("spec", "native")}
    finally:
        envs.ENVS.pop("Doubling", None)
    torch.testing.assert_close(rewards["native"], rewards["spec"], rtol=1e-4, atol=1e-4)
