"""`bench/gpu_check.py` (the CUDA path's check and measurement) run on the CPU, and what it relies on."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import warnings

import pytest
import torch
from conftest import NATIVE_MISSING, ROOT, run_script
from test_fast_path import genomes, small_config

from metarl.backends import compiled, lifetime
from metarl.core import rng, step
from metarl.core.genome import GenomeLayout
from metarl.core.spec import reference_rule_step

_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
gpu_check = sys.modules.setdefault("gpu_check", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(gpu_check)


@pytest.mark.slow
@pytest.mark.long(32)
def test_tiny_check_runs_end_to_end_on_the_cpu(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    # The spec only: compiling the step on the CPU took 40 s of a cold cache here, and the compiled step's
    # parts are tested on their own (test_compiled_step_is_one_graph, tests/test_fast_path.py).
    result = run_script("bench/gpu_check.py", "--device", "cpu", "--tiny", "--threads", "1", "--out", str(out),
                        "--backends", "spec", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ind-steps/s" in result.stdout and f"wrote {out}" in result.stdout
    report = json.loads(out.read_text())
    assert report["passed"] and report["complete"] and report["tiny"]
    assert report["device"] == "cpu" and report["machine"]["torch"] == torch.__version__
    compiler = NATIVE_MISSING is None  # torch.compile on the CPU needs the same C++ compiler
    checks = {(c["backend"], c["code"]): c for c in report["self_check"]}
    assert set(checks) == {("spec", "eager")}
    for c in checks.values():
        assert c["against"] == "spec, cpu, float64" and c["individuals"] == gpu_check.TINY.lifetimes
        if c["backend"] == "spec" or compiler:
            assert c["passed"] and c["status"] == "ok" and 0 <= c["difference"] <= c["tolerance"]
    score = report["score"]
    assert score["cpu"]["n"] == gpu_check.TINY.lifetimes and score["steps"] == 500
    for run in score["runs"]:
        if run["backend"] == "spec" or compiler:
            assert run["within_ci"] and abs(run["difference"]) < 1.0
    native = report["native_cpu"]
    assert native["status"] == ("ok" if NATIVE_MISSING is None else "skipped")
    populations = gpu_check.TINY.populations
    entries = {(e["backend"], e["graphs"], e["population"]): e for e in report["throughput"]}
    assert set(entries) == {("spec", g, p) for g in (False, True) for p in populations}
    for (backend, graphs, pop), e in entries.items():
        if graphs:
            assert e["status"] == "skipped" and "CUDA" in e["reason"]
        elif backend == "spec" or compiler:
            assert e["status"] == "ok" and e["rate"] > 0 and e["steps"] == gpu_check.TINY.steps
            assert e["estimated_bytes_per_individual"] > 0 and "peak_bytes" not in e  # GPU memory only
            if native["status"] == "ok":
                assert e["ratio_to_native_cpu"] == pytest.approx(e["rate"] / native["rate"])
            # The first individuals again on their own: the same numbers, up to float rounding at most.
            alone = e.get("smaller_batch")
            assert (alone is not None) == (pop == populations[0])
            if alone:
                assert alone["individuals"] == pop // 2 and alone["difference"] < 1e-4


@pytest.mark.parametrize("args, message", [
    (["--populations", "0"], "--populations must be >= 1, got 0"),
    (["--populations", "10k"], "--populations 10k: expected comma-separated integers"),
    (["--lifetimes", "1"], "--lifetimes must be >= 2"),
    (["--backends", "native"], "--backends: unknown backend 'native'"),
    (["--budget", "0"], "--budget must be > 0"),
    (["--device", "tpu"], "--device tpu: expected cuda, cuda:N or cpu"),
    (["--model", "missing.yaml"], "--model missing.yaml: no such file"),
    (["--steps", "many"], "argument --steps: invalid int value"),
])
def test_bad_arguments_are_one_error_line(args: list[str], message: str, capsys) -> None:
    assert gpu_check.run_main(gpu_check.main, ["--device", "cpu", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
@pytest.mark.slow
def test_cuda_requested_without_cuda_is_an_error_line(tmp_path) -> None:
    result = run_script("bench/gpu_check.py", "--out", str(tmp_path / "x.json"), timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --device cuda: CUDA is not available") and "Traceback" not in result.stderr
    assert not (tmp_path / "x.json").exists()


def fake_capture(warmup, body):
    """What `cuda_capture` does, without a GPU: a replay runs the recorded steps again from the graph's
    input tensors (the Python of the body runs each time; a CUDA graph replays its kernels)."""
    warmup()
    return body


@pytest.mark.parametrize("backend", ["spec", "compiled"])
def test_step_graph_replays_continue_the_lifetime(backend: str) -> None:
    config = small_config(pop=5)
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 5), rng.individual_keys(0, 0, 0, torch.arange(5))
    with torch.no_grad():
        want = lifetime.Lifetime(g, layout, config, keys, backend=backend, eager=True)
        want_fitness = torch.zeros(5, dtype=torch.float64)
        want.run(8, want_fitness)
        life = lifetime.Lifetime(g, layout, config, keys, backend=backend, eager=True)
        fitness = torch.zeros(5, dtype=torch.float64)
        graph = gpu_check.StepGraph(life, 2, fitness, capture=fake_capture)  # steps 0-1: the warm-up
        inputs = [t.data_ptr() for t in gpu_check.tensors(life.carry)]
        for _ in range(3):
            graph.replay()
    assert [t.data_ptr() for t in gpu_check.tensors(life.carry)] == inputs  # the graph's inputs, updated in place
    assert int(life.carry.t) == 8
    assert torch.equal(fitness, want_fitness)
    for got, expected in zip(gpu_check.tensors(life.carry), gpu_check.tensors(want.carry), strict=True):
        assert torch.equal(got, expected)
    assert torch.equal(life.env.state, want.env.state)


def test_steps_per_graph_divide_the_lifetime() -> None:
    assert [gpu_check.graph_steps(n) for n in (100, 5, 1, 2, 7, 30, 12)] == [10, 1, 0, 1, 1, 10, 6]


def test_self_check_against_the_spec_in_float64() -> None:
    config = small_config(native=True)
    assert lifetime.self_check("spec", config, spec_dtype=torch.float64) < 1e-5  # float32 rounding only
    if NATIVE_MISSING is None:
        assert lifetime.self_check("native", config, spec_dtype=torch.float64, individuals=20) < 1e-5


@pytest.mark.skipif(NATIVE_MISSING is not None, reason=NATIVE_MISSING or "")
def test_a_failed_check_against_another_device_says_where(monkeypatch) -> None:
    # The compiled backend compiles the spec's own step, so a spec edited alone leaves the native kernel stale.
    def changed(*args: object, learning_rate: float, **kw: object) -> object:
        return reference_rule_step(*args, learning_rate=2 * learning_rate, **kw)

    monkeypatch.setattr(step, "reference_rule_step", changed)
    config = small_config()
    with pytest.raises(lifetime.SelfCheckError, match=r"^self-check failed: the native backend differs from the "
                       r"spec by [0-9.e-]+ \(tolerance 0.0001\) (at the first step|after 20 steps) of 4 individuals "
                       r"\(the backend on cpu in float32, the spec on cpu in float64\);"):
        lifetime.self_check("native", config, spec_dtype=torch.float64)


def test_out_of_memory_in_the_compiled_step_is_raised_not_taken_for_a_compiler_failure() -> None:
    calls = []

    def compiled_fn(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")
        if len(calls) == 3:
            raise RuntimeError("inductor: no C++ compiler")
        return 2 * x

    fn = compiled._WithFallback(lambda x: -x, compiled_fn)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        fn(1)
    assert not fn.broken and fn(2) == 4  # the compiled step is used again
    with pytest.warns(UserWarning, match="torch.compile of the lifetime step failed"):
        assert fn(3) == -3  # a compiler failure: eager from now on
    assert fn.broken and fn(4) == -4 and len(calls) == 3


@pytest.mark.slow
def test_compiled_step_is_one_graph() -> None:
    # A graph break splits the step into graphs with Python between them (on a GPU: more launches, and
    # a CUDA graph per piece). `dataclasses.fields` of a class inside the step was one.
    config = small_config(pop=16)
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 16), rng.individual_keys(0, 0, 0, torch.arange(16))
    life = lifetime.Lifetime(g, layout, config, keys, backend="compiled", eager=True)
    carry = dataclasses.replace(life.carry)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explained = torch._dynamo.explain(step.transition)(life.env, *life._step_args, carry, life._spec, None)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
