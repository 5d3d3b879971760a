"""The rule's declaration (`metarl.core.rule`): the genome layout, the saved-model record, and the native
kernel's interface (which rule it implements; its structures checked field by field)."""

from __future__ import annotations

import ctypes
import dataclasses
import math
import re
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SEED_MODEL, genomes, needs_native, run_script, small_config

from metarl import backends
from metarl.backends import lifetime, native
from metarl.core import rng
from metarl.core.genome import GenomeLayout
from metarl.core.rule import (
    CELLS,
    REWARD_CHANGE,
    REWARD_MEAN_TIME,
    RULES,
    STANDARD,
    Input,
    RuleDeclaration,
    register_rule,
    register_source,
    register_trace,
    with_input,
)
from metarl.errors import ModelFileError
from metarl.runs import io

# One input more in the node cell: the fraction of the lifetime elapsed (as examples/custom_rule.py).
CLOCKED = register_rule(with_input(STANDARD, "node_network", Input("elapsed", 1, "lifetime_fraction"),
                                   name="test_clocked"))


def test_the_genome_layout_follows_from_the_declaration() -> None:
    assert GenomeLayout(1, 8).size == 520
    layout = GenomeLayout(1, 8, CLOCKED)
    assert [layout.cells[c].inputs for c in CELLS] == [6, 7, 13]
    assert layout.size == 520 + 8 + 3  # the new input's rows of w_state and w_output
    two = with_input(STANDARD, "connection_network", Input("c2", "S", "post.signal"), name="wide")
    assert GenomeLayout(3, 2, two).cells["connection_network"].inputs == 12 + 3 + 3


def test_the_record_round_trips_and_an_old_model_is_the_standard_rule() -> None:
    assert RuleDeclaration.from_dict(CLOCKED.to_dict()) == CLOCKED
    assert io.load_model(SEED_MODEL).layout.rule is STANDARD  # the original project's file: no record


def learned(g: torch.Tensor, layout: GenomeLayout, config, keys: torch.Tensor) -> torch.Tensor:
    """The actor's weights and biases after a lifetime on the spec."""
    life = lifetime.Lifetime(g, layout, config, keys, backend="spec")
    life.run(config.ga.lifetime_steps, torch.zeros(g.shape[0], dtype=torch.float64))
    return torch.cat([t.reshape(g.shape[0], -1) for t in (*life.actor.weights, *life.actor.biases)], dim=1)


def test_an_input_s_genes_are_its_rows_of_the_cell_s_weights() -> None:
    layout = GenomeLayout(1, 8, CLOCKED)
    mask = layout.input_genes("node_network", "elapsed")
    assert int(mask.sum()) == 8 + 3  # one row of w_state (H = 8 wide) and one of w_output (3 wide)
    g = torch.arange(layout.size, dtype=torch.float32)[None]
    w_state, w_output = layout.view(g, "node_network", "w_state")[0], layout.view(g, "node_network", "w_output")[0]
    assert torch.equal(g[0, mask], torch.cat([w_state[-1], w_output[-1]]))  # declared last: the last rows
    assert not layout.input_genes("reward_network", "r").logical_and(mask).any()
    with pytest.raises(ValueError, match="node_network has no input 'nope'"):
        layout.input_genes("node_network", "nope")


def test_a_custom_rule_runs_on_the_spec_and_reads_its_input() -> None:
    config = small_config(steps=12).replace(rule=dataclasses.replace(small_config().rule, declaration=CLOCKED.name))
    layout = GenomeLayout(1, 8, CLOCKED)
    g, keys = genomes(layout, 3), rng.individual_keys(0, 0, 0, torch.arange(3))
    # Without the new input's rows (the last of the node cell's w_state and w_output) it is the standard rule.
    keep = ~layout.input_genes("node_network", "elapsed")
    standard = learned(g[:, keep], GenomeLayout(1, 8), small_config(steps=12), keys)
    assert torch.allclose(learned(g.masked_fill(~keep, 0.0), layout, config, keys), standard, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(learned(g, layout, config, keys), standard, rtol=1e-3, atol=1e-4)


@needs_native
@pytest.mark.parametrize("native_setting", [None, True])
def test_a_new_rule_runs_on_the_native_kernel_with_no_fall_back(native_setting: bool | None) -> None:
    # The clocked rule (one more input, a source the kernel's authors never saw): generated, run natively,
    # checked against the spec at selection, with no warning.
    config = small_config(native=native_setting)
    config = config.replace(rule=dataclasses.replace(config.rule, declaration=CLOCKED.name))
    assert backends.NATIVE.declines(config) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.select_backend(config, torch.device("cpu")) is backends.NATIVE
    layout = GenomeLayout(1, 8, CLOCKED)
    g, keys = genomes(layout, 8), rng.individual_keys(0, 0, 0, torch.arange(8))
    spec, _ = lifetime.run_lifetimes(g, layout, config, keys, steps=30, backend="spec")
    fast, _ = lifetime.run_lifetimes(g, layout, config, keys, steps=30, backend="native")
    torch.testing.assert_close(fast, spec, rtol=1e-4, atol=1e-4)


@register_source("test.reward_abs", ("reward_network", "node_network"))
def _reward_abs(site):  # type: ignore[no-untyped-def]
    """|reward|: a source written in Python for this test."""
    return site.per_individual(site.reward.abs())


@register_source("test.atan2", ("reward_network",))
def _atan2(site):  # type: ignore[no-untyped-def]
    """An op the generator has no vector form of."""
    return site.per_individual(torch.atan2(site.reward, site.reward + 1))


ABS_REWARD = register_rule(with_input(STANDARD, "reward_network", Input("abs", 1, "test.reward_abs"),
                                      name="test_abs_reward"))
ATAN = register_rule(with_input(STANDARD, "reward_network", Input("a", 1, "test.atan2"), name="test_atan"))


@needs_native
def test_a_source_written_in_python_runs_natively_and_one_with_no_vector_form_is_declined_by_name() -> None:
    config = small_config(native=None)
    abs_config = config.replace(rule=dataclasses.replace(config.rule, declaration=ABS_REWARD.name))
    assert backends.NATIVE.declines(abs_config) is None
    prog = native.program(ABS_REWARD, backends.sample_env(abs_config), 1)
    assert "vabs((reward))" in prog.code  # the source's |reward|, as vector code
    assert lifetime.self_check("native", abs_config, rule=ABS_REWARD) < 1e-4
    atan_config = config.replace(rule=dataclasses.replace(config.rule, declaration=ATAN.name))
    why = backends.NATIVE.declines(atan_config)
    assert why == ("the native kernel cannot generate the rule 'test_atan' with the environment Pendulum: the source "
                   "test.atan2 (reward_network input a): torch.atan2 (the generator has no vector form of it)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backends._warned.discard(why)
        assert backends.select_backend(atan_config, torch.device("cpu")) is backends.SPEC
    assert [str(w.message) for w in caught] == [f"native lifetime kernel not used ({why}); using the torch step"]


# docs/extending.md's examples, verbatim: a source on the connection, a trace and a source reading it.
@register_source("test.abs_weight", ("connection_network",))
def _abs_weight(site):  # type: ignore[no-untyped-def]
    """|w| of the connection."""
    return site.actor.weights[site.layer - 1].abs().unsqueeze(3)


@register_trace("test.reward.peak")
def _reward_peak(before, site):  # type: ignore[no-untyped-def]
    """The highest reward so far."""
    return torch.maximum(before, site.reward)


@register_source("test.below_peak", traces=("test.reward.peak",))
def _below_peak(site):  # type: ignore[no-untyped-def]
    """How far this step's reward is below the best so far."""
    return site.per_individual(site.traces["test.reward.peak"] - site.reward)


PEAKED = register_rule(with_input(with_input(STANDARD, "connection_network", Input("aw", 1, "test.abs_weight"),
                                             name="test_peaked"),
                                  "reward_network", Input("below", 1, "test.below_peak"), name="test_peaked"))


@needs_native
def test_the_documented_source_and_trace_run_natively_as_the_spec_computes_them() -> None:
    config = small_config(native=None)
    config = config.replace(rule=dataclasses.replace(config.rule, declaration=PEAKED.name))
    assert PEAKED.traces == ("test.reward.peak",)
    assert backends.NATIVE.declines(config) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.select_backend(config, torch.device("cpu")) is backends.NATIVE  # self-checked
    layout = GenomeLayout(1, 8, PEAKED)
    g, keys = genomes(layout, 6), rng.individual_keys(1, 0, 0, torch.arange(6))
    spec, _ = lifetime.run_lifetimes(g, layout, config, keys, steps=25, backend="spec")
    fast, _ = lifetime.run_lifetimes(g, layout, config, keys, steps=25, backend="native")
    torch.testing.assert_close(fast, spec, rtol=1e-4, atol=1e-4)


def test_no_rule_source_trace_or_environment_is_named_in_the_hand_written_kernel() -> None:
    from metarl import envs
    from metarl.core.rule import SOURCES, TRACES
    text = "\n".join(p.read_text() for p in sorted(native.SOURCE_DIR.iterdir()) if p.suffix in (".h", ".cpp"))
    code = re.sub(r"//[^\n]*", "", text)  # comments may point to the Python definitions
    # The step's own vocabulary (SPEC: the reward, the signal, the weight a connection cell updates) is the
    # skeleton's; every other source, and every trace, rule and environment, lives in Python only.
    step = {"reward", "signal", "weight"}
    names = [*(n for n in SOURCES if n not in step), *TRACES, *RULES, *envs.ENVS, "reward_mean", "sincos(st", "gym",
             "spin", "NODE_INFO", "links"]
    assert [n for n in names if re.search(rf"(?<![A-Za-z_.]){re.escape(n)}(?![A-Za-z_])", code)] == []


@needs_native
def test_the_structure_check_catches_two_swapped_fields_of_one_type() -> None:
    lib = native.library(1, 8)
    native.check_structures(lib)  # the shipped mirrors agree
    fields = list(native.Options._fields_)
    fields[0], fields[1] = fields[1], fields[0]  # obs_noise and weight_limit: both float, so sizeof is the same
    swapped = type("Options", (ctypes.Structure,), {"_fields_": fields})
    assert ctypes.sizeof(swapped) == ctypes.sizeof(native.Options)
    with pytest.raises(native.NativeUnavailable, match=r"field Options\.obs_noise \(offset 0, size 4\) does not match "
                                                       r"metarl/backends/native.py's mirror \(offset 4, size 4\)"):
        native.check_structures(lib, {**native.MIRRORS, "Options": swapped})
    missing = type("CellMap", (ctypes.Structure,), {"_fields_": native.CellMap._fields_[:-1]})
    with pytest.raises(native.NativeUnavailable, match=r"CellMap\.b_output .* \(no such field\)"):
        native.check_structures(lib, {**native.MIRRORS, "CellMap": missing})


def save(path: Path, rule: RuleDeclaration = CLOCKED) -> Path:
    config = small_config()
    config = config.replace(rule=dataclasses.replace(config.rule, declaration=rule.name))
    layout = GenomeLayout(1, 8, rule)
    io.save_model(path, genomes(layout, 1)[0], layout, config, fitness=1.0, generation=0, seed=0)
    return path


@pytest.mark.slow
def test_a_saved_model_carries_its_rule_into_a_fresh_process(tmp_path: Path) -> None:
    path = save(tmp_path / "model.yaml")
    data = yaml.safe_load(path.read_text())
    assert data["format"] == io.MODEL_FORMAT and data["rule"]["name"] == "test_clocked"
    code = ("import torch; from metarl.backends import lifetime; from metarl.core import rng; "
            "from metarl.runs import io; m = io.load_model(" + repr(str(path)) + "); "
            "k = rng.individual_keys(0, 0, 0, torch.arange(2)); "
            "f = lifetime.run_lifetimes(m.genome[None].expand(2, -1), m.layout, m.config, k, steps=5, "
            "backend='spec')[0]; print(m.layout.rule.name, m.layout.size, f.tolist())")
    done = run_script("-c", code)
    assert done.returncode == 0, done.stderr
    model = io.load_model(path)
    keys = rng.individual_keys(0, 0, 0, torch.arange(2))
    want = lifetime.run_lifetimes(model.genome[None].expand(2, -1), model.layout, model.config, keys, steps=5,
                                  backend="spec")[0]
    assert done.stdout.split(" ", 2) == ["test_clocked", "531", f"{want.tolist()}\n"]


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["cells"]["node_network"]["inputs"][-1].update(source="os.system"),
     "unknown source 'os.system'; known: "),
    (lambda r: r["cells"]["node_network"]["inputs"][-1].update(source="weight"),
     "the source weight feeds only connection_network"),
    (lambda r: r["cells"]["node_network"]["inputs"][-1].update(width=10**9), "width must be"),
    (lambda r: r["cells"]["node_network"]["inputs"][-1].update(width=2), "rule.fingerprint: "),
    (lambda r: r["cells"]["node_network"]["outputs"].pop(), "rule.fingerprint: "),
    (lambda r: r["cells"]["node_network"].update(inputs=[r["cells"]["node_network"]["inputs"][0]] * 100),
     "at most 64 entries"),
    (lambda r: r["cells"].pop("reward_network"), "rule.cells.reward_network: expected a mapping"),
    (lambda r: r.update(format=7), "rule.format: this version reads format 1"),
    (lambda r: r.update(name="standard", fingerprint=None), "is not the rule registered under that name"),
    (lambda r: r.update(extra=1), "rule: unknown keys ['extra']"),
])
def test_a_hostile_rule_record_is_refused_in_one_line(tmp_path: Path, edit, message: str) -> None:
    path = save(tmp_path / "model.yaml")
    data = yaml.safe_load(path.read_text())
    edit(data["rule"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ModelFileError, match="invalid rule declaration|not the rule registered") as err:
        io.load_model(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert RULES["standard"] is STANDARD


def test_a_record_whose_cells_do_not_fit_the_genome_is_refused(tmp_path: Path) -> None:
    path = save(tmp_path / "model.yaml")
    data = yaml.safe_load(path.read_text())
    data["rule"] = STANDARD.to_dict()  # the genome has the new input's rows
    data["config"]["rule"]["declaration"] = "standard"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ModelFileError, match=r"corrupt rule cells: node_network.w_state: expected shape \(14, 8\) "
                                             r".*got shape \(1, 15, 8\)"):
        io.load_model(path)


@pytest.mark.parametrize("mean_time", [None, 3.0])
def test_a_trace_is_the_running_mean_of_the_reward_and_reward_change_reads_it(mean_time: float | None) -> None:
    # reward_change: the standard rule with r minus the reward's running mean (trace reward.mean) as an input of
    # the reward and the connection cell; the mean's time constant is rule.reward_mean_time (default 1 s).
    assert RULES["reward_change"] is REWARD_CHANGE and REWARD_CHANGE.traces == ("reward.mean",)
    assert STANDARD.traces == () and GenomeLayout(1, 8, REWARD_CHANGE).size == 520 + 9 + 10
    assert small_config().rule.reward_mean_time == REWARD_MEAN_TIME
    rule = dataclasses.replace(small_config().rule, declaration="reward_change")
    if mean_time is not None:
        rule = dataclasses.replace(rule, reward_mean_time=mean_time)
    config = small_config(steps=30).replace(rule=rule)
    layout = GenomeLayout(1, 8, REWARD_CHANGE)
    g, keys = genomes(layout, 3), rng.individual_keys(0, 0, 0, torch.arange(3))
    life = lifetime.Lifetime(g, layout, config, keys, backend="spec")
    rewards = torch.zeros(30, 3)
    life.run(30, torch.zeros(3, dtype=torch.float64), rewards)
    rate = 1 - math.exp(-life.env.dt / (mean_time or REWARD_MEAN_TIME))
    mean = torch.zeros(3)
    for r in rewards:  # m <- m + (1 - exp(-dt / T)) (r - m), from 0 at birth
        mean = mean + rate * (r - mean)
    torch.testing.assert_close(life.carry.rule.traces["reward.mean"], mean)
    assert float(mean.abs().max()) > 0


def test_a_standard_genome_embedded_in_a_rule_with_more_inputs_computes_the_same() -> None:
    config = small_config(steps=25)
    wide = config.replace(rule=dataclasses.replace(config.rule, declaration="reward_change"))
    small, big = GenomeLayout(1, 8), GenomeLayout(1, 8, REWARD_CHANGE)
    g, keys = genomes(small, 3), rng.individual_keys(0, 0, 0, torch.arange(3))
    embedded = torch.stack([big.embed(row, small) for row in g])
    assert int((embedded != 0).sum()) == int((g != 0).sum())  # every gene kept, the new rows 0
    torch.testing.assert_close(learned(embedded, big, wide, keys), learned(g, small, config, keys), rtol=0, atol=0)
    with pytest.raises(ValueError, match="is not among this rule's"):
        small.embed(embedded[0], big)  # the other way round: inputs would be dropped
    with pytest.raises(ValueError, match="state_dim"):
        GenomeLayout(1, 4, REWARD_CHANGE).embed(g[0], small)


def test_a_trace_of_ones_own_as_docs_extending_shows() -> None:
    # docs/extending.md, "An input with memory": the highest reward so far, and a source reading it.
    @register_trace("test.reward_peak")
    def reward_peak(before: torch.Tensor, site) -> torch.Tensor:
        """The highest reward so far."""
        return torch.maximum(before, site.reward)

    @register_source("test.below_peak", traces=("test.reward_peak",))
    def below_peak(site) -> torch.Tensor:
        """How far this step's reward is below the best so far."""
        return site.per_individual(site.traces["test.reward_peak"] - site.reward)

    rule = with_input(STANDARD, "node_network", Input("below", 1, "test.below_peak"), name="test_peak")
    assert rule.traces == ("test.reward_peak",)
    config = small_config(steps=20)
    layout = GenomeLayout(1, 8, rule)
    life = lifetime.Lifetime(genomes(layout, 2), layout, config, rng.individual_keys(0, 0, 0, torch.arange(2)),
                             backend="spec")
    rewards = torch.zeros(20, 2)
    life.run(20, torch.zeros(2, dtype=torch.float64), rewards)
    torch.testing.assert_close(life.carry.rule.traces["test.reward_peak"], rewards.clamp(min=0).max(dim=0).values)
    with pytest.raises(ValueError, match="unknown traces"):
        register_source("test.nothing", traces=("no.such.trace",))
