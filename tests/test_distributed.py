"""Sharded evaluation under torchrun gives exactly the single-process run; shard ranges; failures."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import TINY, fitness_columns, run_script

from metarl.evolve import distributed
from metarl.evolve.distributed import Context, DistributedError, shard_range


def single(out, *args):
    proc = run_script("run_config.py", TINY, "--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    return fitness_columns(out)


def torchrun(nproc, *args):
    return run_script("-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                      "run_config.py", *args, timeout=120)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Single-process logs of tiny.yaml at population 20 and 21."""
    root = tmp_path_factory.mktemp("single")
    return {20: single(root / "p20"), 21: single(root / "p21", "--set", "ga.population_size=21")}


# ---------------------------------------------------------------------------- shard ranges

@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("size", [0, 1, 2, 5, 20, 21, 22, 10_000])
def test_shards_are_contiguous_balanced_and_cover_the_population(size, world):
    ranges = [shard_range(size, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    lengths = [b - a for a, b in ranges]
    assert max(lengths) - min(lengths) <= 1
    assert lengths == sorted(lengths, reverse=True)  # the larger shards come first


def test_shard_range_examples_and_bad_rank():
    assert [shard_range(21, r, 2) for r in range(2)] == [(0, 11), (11, 21)]
    assert [shard_range(20, r, 3) for r in range(3)] == [(0, 7), (7, 14), (14, 20)]
    with pytest.raises(ValueError):
        shard_range(10, 2, 2)


# ---------------------------------------------------------------------------- in-process pieces

def test_without_torchrun_setup_is_single_process(monkeypatch):
    from metarl import config as cfg_mod

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    ctx = distributed.setup(cfg_mod.from_dict({"device": "cpu"}))
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_writer) == (0, 1, None, True)
    assert not torch.distributed.is_initialized()
    ctx.close()


def test_population_checksum_is_exact_and_sensitive():
    pop = torch.randn(50, 520, generator=torch.Generator().manual_seed(0))
    a = distributed.population_checksum(pop)
    assert a == distributed.population_checksum(pop.clone()) and 0 <= a < 2**52
    assert float(a) == a  # survives the float64 gather
    changed = pop.clone()
    changed[49, 519] = torch.nextafter(changed[49, 519], torch.tensor(1.0))
    assert distributed.population_checksum(changed) != a


def test_diverged_processes_stop_with_one_message_from_rank_0():
    parts = [torch.tensor([1.0, 2.0, 111.0, 5.0], dtype=torch.float64),
             torch.tensor([3.0, 4.0, 222.0, 5.0], dtype=torch.float64)]
    with pytest.raises(DistributedError, match="diverged at generation 5"):
        Context(torch.device("cpu"), 0, 2, backend="gloo")._check_same(parts, 2, 5)
    with pytest.raises(SystemExit):
        Context(torch.device("cpu"), 1, 2, backend="gloo")._check_same(parts, 2, 5)
    same = [parts[0], parts[0].clone()]
    Context(torch.device("cpu"), 0, 2, backend="gloo")._check_same(same, 2, 5)


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.collective_timeout().total_seconds() == distributed.DEFAULT_TIMEOUT_S
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "7.5")
    assert distributed.collective_timeout().total_seconds() == 7.5
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(distributed.UserError, match=distributed.TIMEOUT_ENV):
        distributed.collective_timeout()


# ---------------------------------------------------------------------------- torchrun end to end

@pytest.mark.slow
def test_two_processes_uneven_shards_equal_single_process(tmp_path, reference):
    out = tmp_path / "run"
    proc = torchrun(2, TINY, "--out", str(out), "--set", "ga.population_size=21")
    assert proc.returncode == 0, proc.stderr
    assert "processes: 2" in proc.stdout
    assert fitness_columns(out) == reference[21]


@pytest.mark.slow
@pytest.mark.long(37)
def test_resume_under_torchrun_with_another_world_size_equals_uninterrupted(tmp_path, reference):
    out = tmp_path / "run"
    proc = torchrun(3, TINY, "--out", str(out), "--generations", "2")
    assert proc.returncode == 0, proc.stderr
    assert fitness_columns(out) == reference[20][:2]
    proc = torchrun(2, "--resume", str(out), "--generations", "4")
    assert proc.returncode == 0, proc.stderr
    assert fitness_columns(out) == reference[20]


@pytest.mark.slow
@pytest.mark.long(18)
def test_null_seed_is_shared_by_all_processes_and_recorded(tmp_path):
    out = tmp_path / "run"
    proc = torchrun(2, TINY, "--out", str(out), "--set", "seed=null", "--generations", "2")
    assert proc.returncode == 0, proc.stderr
    seed = yaml.safe_load((out / "config.yaml").read_text())["seed"]
    assert isinstance(seed, int)
    assert fitness_columns(out) == single(tmp_path / "one", "--seed", str(seed), "--generations", "2")
