"""Plugins (`metarl.plugins`): ``--plugin PATH_OR_MODULE`` on the scripts and the ``plugins:`` config key import user
code that registers rules and environments before a config is validated; the run folder records them, so that
``--resume`` and ``show_results.py RUN/best_model.yaml`` find them again in a new process. Every failure is one
``error:`` line naming the plugin. Also: the reference controller declines an environment it does not know."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY, needs_native, run_script

from metarl import backends, envs, plugins
from metarl.analysis import controllers
from metarl.cli.main import run_main
from metarl.config import from_dict
from metarl.core import rule
from metarl.errors import ConfigError

CUSTOM_RULE = ROOT / "examples" / "custom_rule.py"
CUSTOM_ENV = ROOT / "examples" / "custom_env.py"


def forget_plugins(saved: dict[str, dict]) -> None:
    """As a new process starts: the registries as they were, no plugin imported or given."""
    for registry, before in ((envs.ENVS, saved["envs"]), (rule.RULES, saved["rules"]),
                             (rule.SOURCES, saved["sources"]), (rule.TRACES, saved["traces"])):
        registry.clear()
        registry.update(before)
    for name in [m for m in sys.modules if m.startswith("metarl_plugin_") or m.startswith("metarl_test_plugin")]:
        del sys.modules[name]
    plugins._loaded.clear()
    plugins._given.clear()


@pytest.fixture
def fresh() -> Iterator[Callable[[], None]]:
    """Registries and plugin state put back after the test (no other test sees a plugin's rule or environment);
    the fixture's value forgets every plugin, as a new process would."""
    saved = {"envs": dict(envs.ENVS), "rules": dict(rule.RULES), "sources": dict(rule.SOURCES),
             "traces": dict(rule.TRACES)}
    path, warned = list(sys.path), set(backends._warned)
    try:
        yield lambda: forget_plugins(saved)
    finally:
        forget_plugins(saved)
        sys.path[:] = path
        backends._warned.clear()  # the once-per-process warnings (the kernel declining a plugin's rule or env)
        backends._warned.update(warned)


def one_error_line(done, *parts: str) -> str:
    """The run failed with exactly one ``error:`` line holding ``parts`` and no traceback."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def log_rows(run: Path) -> int:
    return len((run / "log.csv").read_text().splitlines()) - 1


# ---------------------------------------------------------------------------- by path, end to end

def test_a_plugin_file_is_recorded_and_found_again_by_resume_and_show_results(tmp_path: Path, fresh) -> None:
    run = tmp_path / "run"
    done = run_script("run_config.py", TINY, "--plugin", "examples/custom_rule.py", "--set",
                      "rule.declaration=clocked", "--set", "ga.generations=2", "--out", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"plugins: {CUSTOM_RULE}" in done.stdout.splitlines()[0]
    assert "generation 0:" not in done.stdout  # importing the example did not run its main
    # Recorded by absolute path in the run's config, its checkpoint's and its models'.
    assert yaml.safe_load((run / "config.yaml").read_text())["plugins"] == [str(CUSTOM_RULE)]
    model = yaml.safe_load((run / "best_model.yaml").read_text())
    assert model["config"]["plugins"] == [str(CUSTOM_RULE)] and model["rule"]["name"] == "clocked"

    fresh()  # a new process: the rule is unknown until the recorded plugin is imported
    assert "clocked" not in rule.RULES
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_script("run_config.py", "--resume", str(run), "--generations", "3", "--quiet", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert log_rows(run) == 3

    fresh()
    done = run_script("show_results.py", str(run / "best_model.yaml"), "--save", str(tmp_path / "last.png"),
                      "--seed", "0", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "last.png").is_file()

    fresh()  # the run's curves: its config.yaml names the plugin too
    done = run_script("show_results.py", str(run), "--plot", str(tmp_path / "curve.png"), cwd=elsewhere)
    assert done.returncode == 0, done.stderr


def test_a_moved_plugin_is_one_error_line_and_given_again_with_plugin_it_stands_in(tmp_path: Path, fresh) -> None:
    first, second = tmp_path / "a" / "my_rule.py", tmp_path / "b" / "my_rule.py"
    first.parent.mkdir()
    shutil.copy(CUSTOM_RULE, first)
    run = tmp_path / "run"
    done = run_script("run_config.py", TINY, "--plugin", str(first), "--set", "rule.declaration=clocked",
                      "--set", "ga.generations=1", "--out", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    second.parent.mkdir()
    first.rename(second)
    fresh()
    done = run_script("run_config.py", "--resume", str(run), "--generations", "2", "--quiet")
    one_error_line(done, f"plugin {first}: no such file (moved? give it again: --plugin NEW_PATH)")
    fresh()
    done = run_script("run_config.py", "--resume", str(run), "--generations", "2", "--quiet", "--plugin", str(second))
    assert done.returncode == 0, done.stderr
    assert log_rows(run) == 2


def test_a_multi_stage_run_records_its_plugins_once_and_resumes_with_them(tmp_path: Path, fresh) -> None:
    config = tmp_path / "stages.yaml"
    config.write_text("device: cpu\nactor: {hidden: [4]}\nrule: {declaration: clocked}\n"
                      "ga: {population_size: 8, num_survivors: 2, lifetime_steps: 10, generations: 1}\n"
                      "stages:\n  - {name: first}\n  - {name: second, ga.generations: 2}\n")
    run = tmp_path / "run"
    done = run_script("run_config.py", str(config), "--plugin", "examples/custom_rule.py", "--out", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    recorded = yaml.safe_load((run / "stages.yaml").read_text())
    assert recorded["plugins"] == [str(CUSTOM_RULE)] and all("plugins" not in s for s in recorded["stages"])
    assert yaml.safe_load((run / "model.yaml").read_text())["config"]["plugins"] == [str(CUSTOM_RULE)]
    (run / "second" / "checkpoint.pt").unlink()  # as if stopped before the second stage's first checkpoint
    (run / "second" / "log.csv").unlink()
    (run / "model.yaml").unlink()
    fresh()
    done = run_script("run_config.py", "--resume", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    assert log_rows(run / "second") == 2


# ---------------------------------------------------------------------------- by module name, and the config key

PLUGIN_MODULE = '''
"""A rule whose reward cell also reads |reward| (a source of its own)."""
import torch
from metarl.core.rule import STANDARD, Input, register_rule, register_source, with_input


@register_source("reward.magnitude", ("reward_network", "node_network"))
def magnitude(site):
    """|reward|."""
    return site.per_individual(site.reward.abs())


register_rule(with_input(STANDARD, "reward_network", Input("magnitude", 1, "reward.magnitude"), name="magnitude"))
'''


def test_a_plugin_module_by_name_is_recorded_by_name_and_found_again(tmp_path: Path, fresh,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "metarl_test_plugin_rules.py").write_text(PLUGIN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    done = run_script("run_config.py", TINY, "--plugin", "metarl_test_plugin_rules", "--set",
                      "rule.declaration=magnitude", "--set", "ga.generations=1", "--out", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["plugins"] == ["metarl_test_plugin_rules"]
    fresh()
    assert "magnitude" not in rule.RULES and "reward.magnitude" not in rule.SOURCES
    done = run_script("run_config.py", "--resume", str(run), "--generations", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "reward.magnitude" in rule.SOURCES and log_rows(run) == 2


def test_the_plugins_key_of_a_config_file_registers_an_environment(tmp_path: Path, fresh) -> None:
    config = tmp_path / "cart.yaml"
    tiny = yaml.safe_load((ROOT / TINY).read_text())
    config.write_text(yaml.safe_dump({**tiny, "plugins": ["examples/custom_env.py"],  # relative to the cwd
                                      "env": {**tiny.get("env", {}), "name": "CartPole", "init": "down"}}))
    run = tmp_path / "run"
    done = run_script("run_config.py", str(config), "--set", "ga.generations=1", "--out", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load((run / "best_model.yaml").read_text())["config"]["plugins"] == [str(CUSTOM_ENV)]
    fresh()
    # The reference controller knows the pendulums only: --evaluate declines CartPole in one line, before any work.
    done = run_script("show_results.py", str(run / "best_model.yaml"), "--evaluate", "--episodes", "2")
    one_error_line(done, "the reference controller", "knows Pendulum and DoublePendulum, not the environment "
                   "CartPole")
    # The custom env from the command line: show_environment.py.
    fresh()
    done = run_script("show_environment.py", "CartPole", "--plugin", "examples/custom_env.py", "--set", "init=down",
                      "--seconds", "0.2", "--save", str(tmp_path / "cart.png"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cart.png").is_file()


def test_the_example_command_of_the_issue_runs(tmp_path: Path, fresh) -> None:
    # python3 run_config.py configs/tiny.yaml --plugin examples/custom_env.py --set env.name=CartPole
    done = run_script("run_config.py", TINY, "--plugin", "examples/custom_env.py", "--set", "env.name=CartPole",
                      "--set", "ga.generations=1", "--out", str(tmp_path / "run"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "env:\n  name: CartPole" in (tmp_path / "run" / "config.yaml").read_text()


@needs_native
@pytest.mark.parametrize("plugin, setting", [("examples/custom_rule.py", "rule.declaration=clocked"),
                                             ("examples/custom_env.py", "env.name=CartPole")])
def test_both_examples_run_natively_from_the_scripts_with_no_fall_back(tmp_path: Path, fresh, plugin: str,
                                                                        setting: str) -> None:
    # The rule and the env are generated into the native kernel, checked against the spec (the self-check at
    # backend selection), and no line says the torch step runs instead.
    done = run_script("run_config.py", TINY, "--plugin", plugin, "--set", setting, "--set", "ga.generations=1",
                      "--set", "runtime.native=true", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert "  step: native  " in done.stdout.splitlines()[0]
    assert "not used" not in done.stderr and "torch step" not in done.stderr and "self-check" not in done.stderr


# ---------------------------------------------------------------------------- failures: one line each

@pytest.mark.parametrize("script, args", [
    ("run_config.py", [str(ROOT / TINY), "--out", "run"]),
    ("show_results.py", ["pendulum_swingup"]),
    ("show_environment.py", ["Pendulum"]),
])
def test_a_missing_plugin_is_one_error_line_naming_it(tmp_path: Path, fresh, script: str, args: list[str]) -> None:
    done = run_script(script, *args, "--plugin", "plugins/nowhere.py", cwd=tmp_path)
    one_error_line(done, "plugin plugins/nowhere.py: no such file (relative to the current directory")
    assert not (tmp_path / "run").exists()
    done = run_script(script, *args, "--plugin", "no_such_plugin_module", cwd=tmp_path)
    one_error_line(done, "plugin no_such_plugin_module: no module named no_such_plugin_module")


def test_an_exception_inside_a_plugin_is_one_error_line_with_its_type_and_message(tmp_path: Path, fresh) -> None:
    bad = tmp_path / "bad plugin.py"
    bad.write_text("from metarl.core.rule import STANDARD\n\nratio = 1 / 0\n")
    done = run_script("run_config.py", TINY, "--plugin", str(bad), "--out", str(tmp_path / "run"))
    one_error_line(done, f"plugin {bad} failed while imported: ZeroDivisionError: division by zero")
    assert not (tmp_path / "run").exists() and not any(m.startswith("metarl_plugin_bad") for m in sys.modules)
    # A module whose own import fails is not "no module named <plugin>", and a plugin that exits is reported too.
    (tmp_path / "metarl_test_plugin_needs.py").write_text("import not_installed_anywhere_xyz\n")
    (tmp_path / "metarl_test_plugin_exits.py").write_text("import sys\nsys.exit('no thanks')\n")
    sys.path.insert(0, str(tmp_path))
    done = run_script("show_environment.py", "Pendulum", "--plugin", "metarl_test_plugin_needs")
    one_error_line(done, "plugin metarl_test_plugin_needs failed while imported: ModuleNotFoundError: No module "
                   "named 'not_installed_anywhere_xyz'")
    done = run_script("show_results.py", "pendulum_swingup", "--plugin", "metarl_test_plugin_exits")
    one_error_line(done, "plugin metarl_test_plugin_exits failed while imported: SystemExit")
    # A long message is cut, a multi-line one is its first line.
    bad.write_text("raise ValueError('x' * 5000 + '\\nsecond line')\n")
    line = one_error_line(run_script("show_environment.py", "Pendulum", "--plugin", str(bad)), "ValueError: xxx")
    assert len(line) < 400 and "second line" not in line


def test_a_traceback_free_error_also_from_a_real_process(tmp_path: Path) -> None:
    bad = tmp_path / "raises.py"
    bad.write_text("raise RuntimeError('plugin broke')\n")
    done = run_script("run_config.py", TINY, "--plugin", str(bad), real_process=True)
    one_error_line(done, f"plugin {bad} failed while imported: RuntimeError: plugin broke")


@pytest.mark.parametrize("value, message", [
    (3, "plugins: expected a list of a string, got 3"),
    ([3], "plugins[0]: expected a string, got 3"),
    (["two\nlines.py"], "not a plugin"),
    (["not a module"], "neither a .py file (a path ending in .py) nor a module name"),
    (["x.py"] * 65, "plugins: at most 64 plugins, got 65"),
    (["/no/such/folder/x.py"], "plugin /no/such/folder/x.py: no such file"),
    ([str(ROOT / "examples")], "is a folder, not a .py file"),
    ([str(ROOT / "README.md")], "a plugin file is a Python source file ending in .py"),
])
def test_malformed_plugins_in_a_config_are_one_line(value: object, message: str, fresh) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        from_dict({"plugins": value})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_file_is_imported_once_under_a_stable_name_and_its_main_does_not_run(fresh, capsys) -> None:
    first = plugins.load(["examples/custom_rule.py", str(CUSTOM_RULE), "examples/../examples/custom_rule.py"])
    assert first == [str(CUSTOM_RULE)]
    assert capsys.readouterr().out == ""  # the example's main did not run
    name = plugins.module_name(str(CUSTOM_RULE))
    assert name.startswith("metarl_plugin_custom_rule_") and name in sys.modules
    module = sys.modules[name]
    assert plugins.load([str(CUSTOM_RULE)]) == first and sys.modules[name] is module  # not imported again
    assert "clocked" in rule.RULES
    # Recorded only when there are any: configs without plugins are written as before.
    assert "plugins" not in from_dict({}).to_dict()
    assert from_dict({"plugins": ["examples/custom_rule.py"]}).to_dict()["plugins"] == [str(CUSTOM_RULE)]


# ---------------------------------------------------------------------------- bench/throughput.py

def bench(argv: list[str]) -> tuple[int, str, str]:
    """bench/throughput.py's main in this process, as its entry point runs it."""
    spec = importlib.util.spec_from_file_location("metarl_test_plugin_bench", ROOT / "bench" / "throughput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_main(module.main, argv)
    return code, out.getvalue(), err.getvalue()


def test_the_throughput_bench_takes_plugins_and_set_and_names_its_backend(fresh) -> None:
    code, out, err = bench(["--population", "6", "--steps", "4", "--repeats", "1", "--no-native", "--no-compile",
                            "--threads", "1", "--plugin", "examples/custom_env.py", "--set", "env.name=CartPole",
                            "--set", "env.init=down", "--set", "ga.lifetime_steps=3"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("backend: spec  env: CartPole  rule: standard  population: 6  steps: 3  "), lines[0]
    assert lines[-1].startswith("individual-steps/s: ")
    fresh()
    code, out, err = bench(["--population", "6", "--steps", "4", "--repeats", "1", "--plugin",
                            "examples/custom_rule.py", "--set", "rule.declaration=clocked", "--no-native",
                            "--no-compile", "--threads", "1"])
    assert code == 0 and out.startswith("backend: spec  env: Pendulum  rule: clocked"), err
    code, out, err = bench(["--plugin", "nowhere/missing.py"])
    assert code == 2 and err.strip() == "error: plugin nowhere/missing.py: no such file (relative to the current " \
        f"directory {Path.cwd()})"
    code, out, err = bench(["--set", "ga.population_sise=3"])
    assert code == 2 and err.startswith("error: ga.population_sise: unknown key") and len(err.splitlines()) == 1


# ---------------------------------------------------------------------------- the reference controller

def test_the_reference_controller_declines_an_environment_it_does_not_know(fresh) -> None:
    spec = importlib.util.spec_from_file_location("metarl_test_plugin_cart", CUSTOM_ENV)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    env = envs.make("CartPole", 2, init="down")
    with pytest.raises(ConfigError, match=r"^the reference controller \(metarl/analysis/controllers.py\) knows "
                                          r"Pendulum and DoublePendulum, not the environment CartPole: "):
        controllers.run_reference(env, 3)
    controllers.ReferenceController(envs.make("Pendulum", 2))  # the pendulums as before
    controllers.ReferenceController(envs.make("DoublePendulum", 2))


def test_plugin_is_in_every_scripts_help() -> None:
    for script in ("run_config.py", "show_results.py", "show_environment.py"):
        done = run_script(script, "--help")
        assert done.returncode == 0 and "--plugin PATH_OR_MODULE" in done.stdout
