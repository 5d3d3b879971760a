"""The ask/tell seam: Problem, Searcher (the GA, CMA-ES via pycma), the Trainer's hooks, exact resume."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, fitness_columns, run_in_process

from metarl import config as C
from metarl.cpu import cpu_flags
from metarl.errors import ConfigError
from metarl.evolve import ga, searchers
from metarl.evolve import trainer as training
from metarl.evolve.problem import FunctionProblem, LifetimeProblem, as_problem
from metarl.runs import io

SMALL = [f"ga.population_size={8}", "ga.num_survivors=2", "ga.lifetime_steps=10"]
TARGET = 0.25  # the toy problem's optimum: every gene 0.25


def toy(genomes: torch.Tensor, generation: int, progress) -> torch.Tensor:
    """Maximised at every gene = TARGET; NaN for a genome with a NaN gene."""
    return -((genomes.double() - TARGET) ** 2).sum(dim=1)


def tiny(extra: list[str] = ()) -> C.Config:
    return C.load(ROOT / TINY, [*SMALL, *extra])


def logged(rows: list[dict[str, float]]) -> list[tuple[float, ...]]:
    """The rows without the timings."""
    return [tuple(r[k] for k in ("generation", "best", "mean", "median", "worst", "best_ever")) for r in rows]


# ---------------------------------------------------------------------------- Problem


def test_lifetime_problem_is_the_lifetime_evaluation():
    config = tiny()
    state = training.new_run(config)
    problem = LifetimeProblem(config, torch.device("cpu"))
    from metarl.backends.lifetime import evaluate

    want = evaluate(state.population, training.layout_of(config), config, seed=config.seed, generation=2)
    got = problem.evaluate(state.population, seed=config.seed, generation=2)
    assert got.dtype == torch.float64 and torch.equal(got, want)
    assert not torch.equal(problem.evaluate(state.population, seed=config.seed + 1, generation=2), want)


def test_a_plain_function_is_a_problem():
    problem = as_problem(toy)
    assert isinstance(problem, FunctionProblem)
    assert as_problem(problem) is problem
    assert float(problem.evaluate(torch.full((1, 3), TARGET), seed=0, generation=0)[0]) == 0.0


# ---------------------------------------------------------------------------- the GA as a searcher


def test_the_ga_searcher_takes_the_ga_step():
    config = tiny()
    searcher = searchers.create(config, training.layout_of(config))
    assert isinstance(searcher, searchers.GASearcher)
    pop = searcher.ask()
    assert searcher.ask() is pop  # the same until tell
    fitness = toy(pop, 0, None)
    gen = torch.Generator().manual_seed(config.seed)
    training.layout_of(config).random(8, config.rule.init_std, gen)  # generation 0's draws
    want = ga.next_generation(pop, fitness, num_survivors=2, mutation_probability=config.ga.mutation_probability,
                              mutation_strength=config.ga.mutation_strength, generator=gen)
    searcher.tell(fitness)
    assert torch.equal(searcher.ask(), want)
    assert torch.equal(searcher.ask()[0], pop[int(fitness.argmax())])  # the best survives unchanged


def test_a_searcher_state_continues_exactly():
    config = tiny()
    layout = training.layout_of(config)
    a = searchers.create(config, layout)
    for g in range(2):
        a.tell(toy(a.ask(), g, None))
    b = searchers.create(config.replace(seed=99), layout)  # another start, then a's state
    b.load_state_dict(a.state_dict())
    for g in range(2, 4):
        a.tell(toy(a.ask(), g, None))
        b.tell(toy(b.ask(), g, None))
    assert torch.equal(a.ask(), b.ask())


# ---------------------------------------------------------------------------- the Trainer's hooks


class Recorder(training.Hook):
    def __init__(self, events: list, offer=None):
        self.events, self.offer = events, offer

    def generation_begins(self, trainer, generation):
        self.events.append(("begins", generation))
        return self.offer

    def generation_ends(self, trainer, result):
        assert trainer.state.generation == result.generation + 1
        assert result.best == float(result.fitness.max()) == result.row["best"]
        assert torch.equal(result.best_genome, result.genomes[int(result.fitness.argmax())])
        self.events.append(("ends", result.generation))

    def close(self):
        self.events.append(("close",))


def test_the_trainer_calls_its_hooks_around_each_generation(tmp_path):
    events: list = []
    calls: list = []

    def evaluate(genomes, generation, progress):
        calls.append(progress)
        return toy(genomes, generation, progress)

    offered = lambda n: None  # noqa: E731
    trainer = training.Trainer(training.new_run(tiny()), tmp_path, evaluator=evaluate,
                               hooks=[Recorder(events), Recorder(events, offered)])
    assert [type(h) for h in trainer.hooks[:2]] == [training.CheckpointHook, training.CSVLogHook]
    trainer.run(2)
    assert events == [("begins", 0), ("begins", 0), ("ends", 0), ("ends", 0), ("begins", 1), ("begins", 1),
                      ("ends", 1), ("ends", 1), ("close",), ("close",)]
    assert calls == [offered, offered]  # the first progress function a hook offers
    assert len(io.read_log(tmp_path / "log.csv")) == 2 and (tmp_path / "best_model.yaml").is_file()


def test_without_writer_the_trainer_writes_nothing(tmp_path):
    trainer = training.Trainer(training.new_run(tiny()), tmp_path / "r", evaluator=toy, writer=False)
    trainer.run(2)
    assert trainer.state.generation == 2 and not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(("override", "message"), [
    ("search.name=evo", "search.name: unknown value 'evo'"),
    ("search.sigma0=0", r"search.sigma0: must be finite and in \(0, "),
    ("search.sigma0=0.5", "search: sigma0 and diagonal are options of name: cma"),
    ("search.popsize=5", "search.popsize: unknown key"),
])
def test_bad_search_sections_are_one_line(override, message):
    with pytest.raises(ConfigError, match=message):
        tiny([override])


def test_without_pycma_cma_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cma", None)  # import cma raises ImportError
    code, err = run_in_process([str(ROOT / TINY), "--out", str(tmp_path / "r"), "--set", "search.name=cma"])
    assert code == 2 and err.strip().splitlines() == [
        "error: search.name: cma needs the pycma package: pip install cma (or pip install 'metarl[cma]')"]
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- CMA-ES (pycma)


def cma_config(extra: list[str] = ()) -> C.Config:
    """Full covariance on 56 genes (rule.state_dim 0): pycma's ask and tell in milliseconds."""
    pytest.importorskip("cma")
    return tiny(["search.name=cma", "search.sigma0=0.5", "rule.state_dim=0", *extra])


@pytest.mark.slow
def test_cma_es_climbs_the_toy_problem(tmp_path):
    config = cma_config(["ga.population_size=12"])
    trainer = training.Trainer(training.new_run(config), tmp_path, evaluator=toy, writer=False)
    assert isinstance(trainer.state.searcher, searchers.CMASearcher)
    trainer.run(40)
    rows = trainer.state.rows
    assert rows[-1]["mean"] > 0.3 * rows[0]["mean"]  # the whole population moved towards the optimum
    assert rows[-1]["best_ever"] > rows[0]["best"]


def test_cma_es_draws_from_the_run_seed_only():
    config = cma_config(["rule.state_dim=8", "search.diagonal=true"])  # 520 genes
    layout = training.layout_of(config)
    np.random.seed(1)
    a = searchers.create(config, layout)
    np.random.seed(2)  # numpy's global generator plays no part
    b = searchers.create(config, layout)
    assert torch.equal(a.ask(), b.ask())
    assert not torch.equal(searchers.create(config.replace(seed=5), layout).ask(), a.ask())


def test_cma_es_nonfinite_fitness_counts_as_the_worst():
    config = cma_config()
    s = searchers.create(config, training.layout_of(config))
    fitness = toy(s.ask(), 0, None)
    fitness[0] = math.nan
    fitness[1] = math.inf
    s.tell(fitness)
    assert bool(torch.isfinite(s.ask()).all())


def test_a_cma_run_resumes_exactly(tmp_path):
    config = cma_config()
    straight = training.Trainer(training.new_run(config), tmp_path / "a", evaluator=toy)
    straight.run(6)
    first = training.Trainer(training.new_run(config), tmp_path / "b", evaluator=toy)
    first.run(3)
    resumed = training.Trainer(training.load_run(tmp_path / "b"), tmp_path / "b", evaluator=toy)
    assert isinstance(resumed.state.searcher, searchers.CMASearcher) and resumed.state.generation == 3
    resumed.run(6)
    assert logged(resumed.state.rows) == logged(straight.state.rows)
    assert torch.equal(resumed.state.population, straight.state.population)


def test_snapshots_hold_the_searcher_s_best_guess_every_n_generations_and_the_last(tmp_path):
    # The GA: its best individual (what best_model.yaml holds); CMA-ES: the distribution's mean after the update.
    for name, config in (("ga", tiny(["logging.snapshot_every=2", "ga.generations=5"])),
                         ("cma", cma_config(["logging.snapshot_every=2", "ga.generations=5"]))):
        trainer = training.Trainer(training.new_run(config), tmp_path / name, evaluator=toy)
        trainer.run(5)
        assert sorted(p.name for p in (tmp_path / name / training.SNAPSHOTS).iterdir()) == \
            ["gen_000000.yaml", "gen_000002.yaml", "gen_000004.yaml"]
        last = io.load_model(training.snapshot_path(tmp_path / name, 4))
        assert last.generation == 4 and last.fitness == trainer.state.rows[-1]["best"]
        assert torch.equal(last.genome, trainer.state.searcher.candidates(1)[0][0])
        best = io.load_model(tmp_path / name / "best_model.yaml").genome
        assert torch.equal(last.genome, best) == (name == "ga")
    # A resumed run goes on writing them; without the key there is no folder.
    resumed = training.Trainer(training.load_run(tmp_path / "ga", generations=7), tmp_path / "ga", evaluator=toy)
    resumed.run(7)
    assert training.snapshot_path(tmp_path / "ga", 6).exists()
    training.Trainer(training.new_run(tiny()), tmp_path / "none", evaluator=toy).run(2)
    assert not (tmp_path / "none" / training.SNAPSHOTS).exists()


def test_a_damaged_cma_state_is_one_line(tmp_path):
    config = cma_config()
    training.Trainer(training.new_run(config), tmp_path, evaluator=toy).run(1)
    state = torch.load(tmp_path / training.CHECKPOINT, weights_only=True)
    state["cma_state"] = {"~": "obj", "i": 0, "a": {"mean": ["l", 1, [1.0]]}}
    io.save_checkpoint(tmp_path / training.CHECKPOINT, {k: v for k, v in state.items()
                                                        if k not in ("format", "sha256")})
    with pytest.raises(io.ModelFileError, match=r"checkpoint.pt: corrupt checkpoint \(its cma state at es.mean: a "
                                                r"list where the config's state has a float64 array"):
        training.load_run(tmp_path)
    state.pop("cma_state")
    io.save_checkpoint(tmp_path / training.CHECKPOINT, {k: v for k, v in state.items()
                                                        if k not in ("format", "sha256")})
    with pytest.raises(io.ModelFileError, match="needs its 'cma_state' and 'cma_pending'"):
        training.load_run(tmp_path)


@pytest.mark.slow
def test_run_config_with_cma_resumes_to_the_uninterrupted_log(tmp_path):
    pytest.importorskip("cma")
    args = [str(ROOT / TINY), "--set", "search.name=cma", "--set", "search.diagonal=true", "--quiet"]
    assert run_in_process([*args, "--out", str(tmp_path / "a"), "--generations", "4"])[0] == 0
    assert run_in_process([*args, "--out", str(tmp_path / "b"), "--generations", "2"])[0] == 0
    assert run_in_process(["--resume", str(tmp_path / "b"), "--generations", "4", "--quiet"])[0] == 0
    assert fitness_columns(tmp_path / "b") == fitness_columns(tmp_path / "a")
    assert io.load_model(tmp_path / "b" / "best_model.yaml").fitness == \
        io.load_model(tmp_path / "a" / "best_model.yaml").fitness


def test_rescore_of_a_cma_run_scores_its_mean_and_last_best_and_survives_resume(tmp_path, capsys):
    from metarl.analysis import evaluation
    from metarl.cli import show_results
    from metarl.cli.main import run_main

    config = cma_config()
    trainer = training.Trainer(training.new_run(config), tmp_path, evaluator=toy)
    trainer.run(2)
    searcher = trainer.state.searcher
    assert isinstance(searcher, searchers.CMASearcher)
    candidates, labels = searcher.candidates(3)
    assert labels == ["mean", "rank 1", "rank 2"]
    assert torch.equal(candidates[0], torch.from_numpy(searcher.es.mean).float())
    # The last generation told, best first by training fitness: rank 1 is what best_model.yaml holds.
    assert torch.equal(candidates[1], io.load_model(tmp_path / "best_model.yaml").genome)
    assert searcher.last is not None and bool((searcher.last[1][:-1] >= searcher.last[1][1:]).all())
    # The checkpoint keeps them: a resumed run offers the same candidates.
    again, _ = training.load_run(tmp_path).searcher.candidates(3)
    assert torch.equal(again, candidates)
    assert run_main(show_results.main, [str(tmp_path), "--rescore", "3", "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "candidates (the cma mean" in out and "mean" in out and "rank 2" in out
    layout = training.layout_of(config)
    scores = evaluation.rescore(candidates, layout, config, episodes=2, seed=0)
    model = io.load_model(tmp_path / "rescored_model.yaml")
    best = int(torch.argmax(scores))
    assert torch.equal(model.genome, candidates[best]) and model.fitness == float(scores[best])
    # A corrupt last generation is refused by name.
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["last_fitness"] = state["last_fitness"][:1]
    with pytest.raises(io.ModelFileError, match="last_population and last_fitness"):
        searchers.CMASearcher(config, layout, torch.Generator()).load_state_dict(state)


BLAS_KERNEL = ("from threadpoolctl import threadpool_info; "
               "print(','.join(i.get('architecture') or '?' for i in threadpool_info() "
               "if i['internal_api'] == 'openblas'))")


@pytest.mark.skipif(not {"avx2", "fma"} <= (cpu_flags() or frozenset()),
                    reason="the pin applies to CPUs with AVX2 and FMA")
def test_numpy_s_blas_runs_the_same_kernels_on_every_cpu():
    # Full CMA-ES's numbers follow OpenBLAS's kernels, which it picks by CPU (a run drifted by 3e-7 from its
    # second generation between an Intel Xeon and an AMD EPYC): `import metarl` pins Haswell's, whatever the
    # CPU or the environment asks for, here Katmai's (OPENBLAS_CORETYPE=Prescott).
    pytest.importorskip("threadpoolctl")
    env = {**os.environ, "OPENBLAS_CORETYPE": "Prescott"}
    pinned, unpinned = (subprocess.run([sys.executable, "-c", f"{first}; {BLAS_KERNEL}"], env=env, text=True,
                                       capture_output=True, check=True).stdout.strip()
                        for first in ("import metarl, numpy", "import numpy, metarl"))
    assert pinned == "Haswell" and unpinned != "Haswell", (pinned, unpinned)
    # The test process itself (conftest imports metarl first), where the in-process CMA-ES tests run.
    from threadpoolctl import threadpool_info

    assert {i.get("architecture") for i in threadpool_info() if i["internal_api"] == "openblas"} == {"Haswell"}
