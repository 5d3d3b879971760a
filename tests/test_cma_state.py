"""CMA-ES in the checkpoint as data (issue 46): pycma's state without pickle, exact in any process, and a hostile
state one line that runs nothing."""

from __future__ import annotations

import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, fitness_columns, run_in_process

from metarl import config as C
from metarl.evolve import cma_state, searchers
from metarl.evolve import trainer as training
from metarl.runs import io

pytest.importorskip("cma")

def toy(genomes: torch.Tensor, generation: int, progress: Any) -> torch.Tensor:
    return -((genomes.double() - 0.25) ** 2).sum(dim=1)


def config(diagonal: bool = False) -> C.Config:
    return C.load(ROOT / TINY, ["ga.population_size=8", "ga.lifetime_steps=5", "search.name=cma",
                                "search.sigma0=0.5", "rule.state_dim=0", f"search.diagonal={str(diagonal).lower()}"])


@pytest.mark.parametrize("diagonal", [False, True])
def test_a_state_read_back_continues_bit_for_bit(diagonal):
    cfg = config(diagonal)
    layout = training.layout_of(cfg)
    a = searchers.create(cfg, layout)
    for k in range(1, 13):
        a.tell(toy(a.ask(), k, None))
        if k not in (1, 5, 12):
            continue
        b = searchers.create(cfg.replace(seed=99), layout)
        b.load_state_dict(a.state_dict())
        for _ in range(4):
            a.tell(toy(a.ask(), 0, None))
            b.tell(toy(b.ask(), 0, None))
        assert torch.equal(a.ask(), b.ask()) and np.array_equal(a.es.sm.C if not diagonal else a.es.sigma_vec.scaling,
                                                                b.es.sm.C if not diagonal else b.es.sigma_vec.scaling)


def test_the_checkpoint_holds_no_pickle_and_no_class_name(tmp_path):
    training.Trainer(training.new_run(config()), tmp_path, evaluator=toy).run(2)
    state = torch.load(tmp_path / training.CHECKPOINT, weights_only=True)
    assert "cma" not in state and state["cma_pending"].dtype == torch.float64

    def leaves(node: Any) -> list[Any]:
        if isinstance(node, dict):
            return [x for k, v in node.items() for x in (k, *leaves(v))]
        if isinstance(node, (list, tuple)):
            return [x for v in node for x in leaves(v)]
        return [node]

    text = {x for x in leaves(state["cma_state"]) if isinstance(x, str)}
    assert not any("cma." in t or "numpy" in t or "builtins" in t for t in text)
    assert not any(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 for x in leaves(state["cma_state"]))


READER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_cma_state import toy
from metarl.evolve import trainer as training
from metarl.runs import io
root = Path({root!r})
straight = io.read_log(root / "straight" / "log.csv")
exact = []
for k in range(1, 11):
    state = training.load_run(root / f"k{{k}}")
    assert all(x in state.searcher.es.sent_solutions for x in state.searcher.pending), k  # pycma finds its samples
    training.Trainer(state, root / f"k{{k}}", evaluator=toy, writer=False).run(16)
    fields = ("generation", "best", "mean", "median", "worst", "best_ever")
    exact.append([[r[f] for f in fields] for r in state.rows] == [[r[f] for f in fields] for r in straight])
print(sum(exact))
"""


class Stop(training.Hook):
    """Leaves, after each of the first 10 generations, a copy of the run folder as a run stopped then left it."""

    def generation_ends(self, trainer: training.Trainer, result: training.GenerationResult) -> None:
        if trainer.state.generation <= 10:
            shutil.copytree(trainer.run_dir, trainer.run_dir.parent / f"k{trainer.state.generation}")


@pytest.mark.slow
def test_a_stopped_cma_run_resumes_exactly_in_a_process_of_another_hash_seed(tmp_path):
    # pycma keys the samples it asked by hash(x.tobytes()), which PYTHONHASHSEED salts: runs stopped after k = 1..10
    # generations in this process, resumed to 16 in a process of another seed, give the straight log.
    training.Trainer(training.new_run(config()), tmp_path / "straight", evaluator=toy, hooks=[Stop()]).run(16)
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"  # this process's is random, or set
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", READER.format(tests=str(ROOT / "tests"), root=str(tmp_path))],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["10"]


# ---------------------------------------------------------------------------- hostile states


def node_at(tree: dict[str, Any], path: str) -> dict[str, Any]:
    """The node of attribute path ``a.b.c`` (references followed)."""
    index: dict[int, dict[str, Any]] = {}

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("i"), int):
                index[node["i"]] = node
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            if node and node[0] in ("v", "d", "l") and isinstance(node[1], int):
                index[node[1]] = node
            for v in node:
                collect(v)

    collect(tree)
    node: Any = tree
    for name in path.split("."):
        node = node["a"][name]
        while isinstance(node, list) and node[0] in ("r", "v"):  # a reference, a view: to the array
            node = index[node[1]] if node[0] == "r" else node[2]
    return node


def set_mean(v: float):
    def edit(state: dict[str, Any]) -> None:
        node_at(state["cma_state"], "mean")["v"][3] = v
    return edit


def set_sigma(v: float):
    def edit(state: dict[str, Any]) -> None:
        state["cma_state"]["a"]["sigma"] = v
    return edit


def replace(path: str, node: Any):
    def edit(state: dict[str, Any]) -> None:
        *parent, name = path.split(".")
        (node_at(state["cma_state"], ".".join(parent)) if parent else state["cma_state"])["a"][name] = node
    return edit


def edit_c(fn):
    def edit(state: dict[str, Any]) -> None:
        node = node_at(state["cma_state"], "sm.C")
        node["v"] = fn(node["v"])
    return edit


MARKER = Path("/tmp/metarl_issue46_marker")


class Boom:
    """What a hostile pickle would run on reading: a file appears."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def old_pickle(state: dict[str, Any]) -> None:
    state.pop("cma_state")
    state.pop("cma_pending")
    state["cma"] = torch.frombuffer(bytearray(pickle.dumps(Boom())), dtype=torch.uint8)


def pending(t: Any):
    def edit(state: dict[str, Any]) -> None:
        state["cma_pending"] = t(state["cma_pending"])
    return edit


HOSTILE = [
    ("mean-nan", set_mean(math.nan), "its cma state at es.mean: NaN or infinite entries"),
    ("mean-inf", set_mean(math.inf), "its cma state at es.mean: NaN or infinite entries"),
    ("sigma-negative", set_sigma(-1.0), "sigma must be a positive finite number, got -1.0"),
    ("sigma-zero", set_sigma(0.0), "sigma must be a positive finite number"),
    ("sigma-nan", set_sigma(math.nan), "es.sigma: NaN"),
    ("sigma-inf", set_sigma(math.inf), "sigma must be a positive finite number, got inf"),
    ("sigma-string", set_sigma("big"), "es.sigma: a str where the config's state has a number"),
    ("sigma-numpy-string", set_sigma({"~": "np", "d": "float64", "v": "big"}), "es.sigma: a number of no known type"),
    ("C-nan", edit_c(lambda t: t.fill_(math.nan)), "at es.sm.C: NaN or infinite entries"),
    ("C-shape", edit_c(lambda t: t[:3, :3].clone()), "es.sm.C: a float64 array of shape (3, 3) where the config's "
                                                     "state has a float64 array of shape (56, 56)"),
    ("C-int", edit_c(lambda t: t.long()), "es.sm.C: a int64 array"),
    ("D-negative", lambda s: node_at(s["cma_state"], "sm.D")["v"].neg_(), "sm.D must be positive"),
    ("mean-shape", replace("mean", {"~": "array", "i": 10**6, "v": torch.zeros(3, dtype=torch.float64)}),
     "es.mean: a float64 array of shape (3,)"),
    ("object-where-none", replace("best.x", {"~": "obj", "i": 10**6, "a": {}}),
     "es.best.x: an object where the config's state has none"),
    ("ref-to-nothing", replace("mean", ["r", 10**7]), "es.mean: a reference to nothing read yet"),
    ("short-node-of-other-length", replace("mean", ["v", 10**6]), "es.mean: a list of 2 that is not a state node"),
    ("list-node-tag", replace("mean", [["r"], 1]), "es.mean: a list of 2 that is not a state node"),
    ("unknown-node", replace("mean", {"~": "global", "v": "os.system"}), "es.mean: an unknown node 'global'"),
    ("raw-tensor", replace("mean", torch.zeros(56, dtype=torch.float64)), "es.mean: a Tensor, not a state node"),
    ("view-outside", replace("dC", ["v", 10**6, {"~": "array", "i": 10**6 + 1, "v": torch.ones(4, dtype=torch.float64)},
                                    0, [56], [8]]), "es.dC: a view outside its array"),
    ("row-outside", replace("dC", ["v", 10**6, {"~": "array", "i": 10**6 + 1,
                                                "v": torch.ones(4, 4, dtype=torch.float64)}, 8 * 16]),
     "es.dC: a view outside its array"),
    ("keep-where-none", replace("nonexistent", {"~": "keep"}), "es.nonexistent: no such part in the config's state"),
    ("method-shadow", replace("tell", 1.0), "es.tell: an attribute that would hide the object's code"),
    ("dunder", replace("__class__", "x"), "es.__class__: an attribute that would hide the object's code"),
    ("range-zero-step", replace("countiter", {"~": "range", "v": [0, 3, 0]}), "es.countiter: a range that is not"),
    ("pending-shape", pending(lambda t: t[:3]), "its cma_pending must be the samples asked"),
    ("pending-nan", pending(lambda t: t.fill_(math.nan)), "its cma_pending must be the samples asked"),
    ("pending-other", pending(lambda t: t + 1), "its population is not its cma_pending samples"),
    ("no-state", lambda s: s.pop("cma_state"), "needs its 'cma_state' and 'cma_pending'"),
    ("other-pycma", lambda s: s.__setitem__("cma_version", "3.0.0"), "written with pycma '3.0.0', this is pycma "),
    ("no-pycma-version", lambda s: s.pop("cma_version"), "written with pycma None, this is pycma "),
    ("old-pickle", old_pickle, "its cma state is a pickle, which this version does not read"),
]


@pytest.fixture(scope="module")
def cma_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cma") / "run"
    training.Trainer(training.new_run(config()), path, evaluator=toy).run(3)
    return path


@pytest.mark.parametrize(("name", "edit", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_cma_state_is_one_line_and_runs_nothing(cma_run, tmp_path, name, edit, message):
    run = tmp_path / "run"
    run.mkdir()
    for f in ("config.yaml", "log.csv", training.CHECKPOINT):
        (run / f).write_bytes((cma_run / f).read_bytes())
    state = torch.load(run / training.CHECKPOINT, weights_only=True)
    edit(state)
    io.save_checkpoint(run / training.CHECKPOINT, {k: v for k, v in state.items() if k not in ("format", "sha256")})
    before = (run / training.CHECKPOINT).read_bytes()
    MARKER.unlink(missing_ok=True)
    code, err = run_in_process(["--resume", str(run), "--generations", "5", "--quiet"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err[-2000:]
    assert "Traceback" not in err and len(lines[0]) < 600
    assert not MARKER.exists()
    assert (run / training.CHECKPOINT).read_bytes() == before and len(fitness_columns(run)) == 3


def test_encode_refuses_what_is_not_data():
    with pytest.raises(ValueError, match="a builtins.object"):
        like = type("Strategy", (), {"__module__": "cma.x"})()
        like.o = object()
        cma_state.encode(like)


# ---------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(("population", "fits"), [(1, False), (2, False), (3, True)])
def test_cma_needs_three_samples_a_generation(tmp_path, population, fits):
    # pycma's step-size rule in 300 or more genes spends two samples a generation: with 2 it stopped in a traceback.
    args = [str(ROOT / TINY), "--out", str(tmp_path / "r"), "--set", "search.name=cma", "--set",
            f"ga.population_size={population}", "--set", "ga.num_survivors=1", "--generations", "2", "--quiet"]
    code, err = run_in_process(args)
    if fits:
        assert code == 0 and len(fitness_columns(tmp_path / "r")) == 2, err
    else:
        assert code == 2 and err.strip().splitlines() == [
            f"error: ga.population_size: search.name: cma needs at least 3 samples a generation (its step-size rule "
            f"spends two of them), got {population}"] and not (tmp_path / "r").exists()


def test_the_memory_estimate_holds_cma_s_covariance():
    from metarl import resources

    cpu = torch.device("cpu")
    small, big = (C.load(ROOT / TINY, ["search.name=cma", f"rule.state_dim={h}"]) for h in (16, 64))
    genes = [training.layout_of(c).size for c in (small, big)]
    a, b = resources.estimate(small, cpu), resources.estimate(big, cpu)
    assert b.searcher >= 12 * 8 * genes[1] ** 2 and b.host > b.searcher + b.population
    assert b.searcher / a.searcher == pytest.approx((genes[1] / genes[0]) ** 2, rel=0.05)
    diagonal = resources.estimate(big.replace(search=C.SearchConfig(name="cma", diagonal=True)), cpu)
    assert diagonal.searcher < b.searcher / 100
    assert resources.estimate(C.load(ROOT / TINY, ["rule.state_dim=64"]), cpu).searcher == 0  # the GA


def test_a_covariance_beyond_memory_is_one_line_that_offers_the_diagonal(tmp_path):
    code, err = run_in_process([str(ROOT / TINY), "--out", str(tmp_path / "r"), "--set", "search.name=cma",
                                "--set", "rule.state_dim=256"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: memory: the run needs about "), err
    assert "CMA-ES's state (covariance 205368 x 205368, float64)" in err and "set search.diagonal: true" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("argv", "blames"), [(["x.yaml"], False), (["x.yaml", "--allow-large"], True)])
def test_out_of_memory_names_allow_large_only_where_it_was_given(capsys, argv, blames):
    from metarl.cli.main import run_main

    def main(args: list[str] | None) -> int:
        raise MemoryError

    assert run_main(main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory: an allocation failed") and ("--allow-large" in err) == blames


def test_a_state_nested_too_deep_is_one_line(cma_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cma_run, run)
    state = torch.load(run / training.CHECKPOINT, weights_only=True)
    node: Any = 1.0
    for _ in range(3000):
        node = ["l", 10**6, [node]]
    state["cma_state"]["a"]["deep"] = node
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # only to write it: a hostile file is made however its maker likes
    try:
        io.save_checkpoint(run / training.CHECKPOINT, {k: v for k, v in state.items() if k not in ("format", "sha256")})
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(io.ModelFileError, match=r"corrupt checkpoint \(its data is nested too deep\)"):
        training.load_run(run)
