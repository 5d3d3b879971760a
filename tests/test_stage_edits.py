"""Multi-stage runs that refuse what would change them behind their back (issue 46): a stages.yaml edited since
the run started, a stage resumed or rescored alone, torchrun, a damaged shipped model, a full disk. Each is one
``error:`` line, exit 2, with the run folder as it was."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_in_process
from test_stages import write_config

from metarl.cli import show_results
from metarl.cli.main import run_main
from metarl.evolve import stages
from metarl.runs import io
from metarl.runs.lock import LOCK_FILE


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


def one_line(code: int, err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert message in lines[0] and "Traceback" not in err and len(lines[0]) < 800, err


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete two-stage run (tests/test_stages.py's: stage two rescored)."""
    tmp = tmp_path_factory.mktemp("stages")
    code, err = run_in_process([str(write_config(tmp)), "--out", str(tmp / "run"), "--quiet"])
    assert code == 0, err
    return tmp / "run"


def copy(finished: Path, tmp_path: Path, *, second_started: bool = True) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    if not second_started:  # stopped at the stage boundary: stage two not begun
        shutil.rmtree(out / "two")
        (out / stages.MODEL_FILE).unlink()
    return out


def edit(fn):
    def apply(out: Path) -> None:
        data = yaml.safe_load((out / stages.STAGES_FILE).read_text())
        fn(data["stages"])
        (out / stages.STAGES_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
    return apply


def set_key(i: int, section: str, key: str, value: Any):
    return edit(lambda s: s[i][section].__setitem__(key, value))


EDITS = [
    ("generations-of-unstarted", set_key(1, "ga", "generations", 3), False,
     "stages[1] (two): ga.generations is 3 but was 2 when the run started"),
    ("generations-of-complete", set_key(0, "ga", "generations", 3), True,
     "stages[0] (one): ga.generations is 3 but was 2 when the run started"),
    ("env-of-complete", set_key(0, "env", "max_torque", 3.0), True,
     "stages[0] (one): env.max_torque is 3.0 but was 2.0 when the run started"),
    ("dropped", edit(lambda s: s.pop()), False, "stages[1] (two) is gone (dropped since the run started"),
    ("added", edit(lambda s: s.append({**s[1], "name": "three"})), True,
     "stages[2] (three) was added since the run started"),
    ("renamed-started", edit(lambda s: s[0].__setitem__("name", "uno")), True,
     "stages[0] is named 'uno' but was 'one' when the run started (renamed or moved; its progress is in one/)"),
    ("swapped", edit(lambda s: (s[0].__setitem__("name", "two"), s[1].__setitem__("name", "one"))), True,
     "stages[0] is named 'two' but was 'one'"),
    ("rescore-added", edit(lambda s: s[0].__setitem__("rescore", 1)), True,
     "stages[0] (one).rescore is 1 but was None when the run started"),
    ("rescore-dropped", edit(lambda s: s[1].pop("rescore")), True,
     "stages[1] (two).rescore is None but was 2 when the run started"),
    ("ship-snapshot", edit(lambda s: s[0].update(ship="snapshot", logging={**s[0]["logging"], "snapshot_every": 1})),
     True, "stages[0] (one).ship is 'snapshot' but was 'best' when the run started"),
    ("seed-of-unstarted", set_key(1, "ga", "mutation_strength", 0.5), False,
     "stages[1] (two): ga.mutation_strength is 0.5 but was 0.1 when the run started"),
    ("started-record-damaged", lambda out: (out / stages.STARTED_FILE).write_text("stages: 3\n"), True,
     "it is stages.yaml as the run started: restore it"),
]


@pytest.mark.parametrize(("name", "change", "second_started", "message"), EDITS, ids=[e[0] for e in EDITS])
def test_an_edited_stage_file_is_refused_on_resume(finished, tmp_path, name, change, second_started, message):
    out = copy(finished, tmp_path, second_started=second_started)
    change(out)
    before = tree(out)
    code, err = run_in_process(["--resume", str(out), "--quiet"])
    one_line(code, err, message)
    assert tree(out) == before


def test_what_a_resume_may_change_in_a_stage_is_accepted(finished, tmp_path):
    out = copy(finished, tmp_path, second_started=False)
    set_key(1, "logging", "every", 7)(out)
    set_key(0, "runtime", "threads", 2)(out)
    code, err = run_in_process(["--resume", str(out), "--quiet"])
    assert code == 0, err
    got, want = (io.load_model(run / stages.MODEL_FILE) for run in (out, finished))
    assert got.genome.tolist() == want.genome.tolist() and got.fitness == want.fitness


@pytest.mark.parametrize("stage", ["one", "two"])
def test_a_stage_is_not_resumed_or_rescored_alone(finished, tmp_path, capsys, stage):
    out = copy(finished, tmp_path)
    before = tree(out)
    code, err = run_in_process(["--resume", str(out / stage), "--generations", "5"])
    one_line(code, err, f"{out / stage}: a stage of the multi-stage run {out}: --resume of one stage would change "
                        f"what the run ships")
    assert run_main(show_results.main, [str(out / stage), "--rescore", "1", "--episodes", "2"]) == 2
    one_line(2, capsys.readouterr().err, "--rescore of one stage would change what the run ships")
    assert tree(out) == before
    # A copy of the stage's folder is an ordinary run folder.
    shutil.copytree(out / stage, tmp_path / "alone")
    assert run_main(show_results.main, [str(tmp_path / "alone"), "--rescore", "1", "--episodes", "2"]) == 0


@pytest.mark.parametrize("resume", [False, True])
def test_torchrun_with_stages_is_refused_before_anything_is_written(finished, tmp_path, monkeypatch, resume):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    if resume:
        out = copy(finished, tmp_path, second_started=False)
        before = tree(out)
        code, err = run_in_process(["--resume", str(out)])
        assert tree(out) == before
    else:
        out = tmp_path / "new"
        code, err = run_in_process([str(write_config(tmp_path)), "--out", str(out)])
        assert not out.exists()
    one_line(code, err, "a multi-stage config runs in one process (torchrun is not supported for it yet)")


def garbage(path: Path) -> None:
    path.write_text("actor: 3\n")


def folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


SHIPPED = [
    ("garbage", garbage, "stages[1] (two) shipped "),
    ("folder", folder, "rescored_model.yaml: is a folder; a run folder's rescored_model.yaml must be a plain file"),
    ("other-rule", lambda p: p.write_bytes((p.parent.parent / "one" / "best_model.yaml").read_bytes().replace(
        b"state_dim: 8", b"state_dim: 9")), "stages[1] (two) shipped "),
]


@pytest.mark.parametrize(("name", "damage", "message"), SHIPPED, ids=[s[0] for s in SHIPPED])
def test_a_damaged_last_model_is_not_copied(finished, tmp_path, name, damage, message):
    out = copy(finished, tmp_path)
    (out / stages.MODEL_FILE).unlink()
    damage(out / "two" / "rescored_model.yaml")
    code, err = run_in_process(["--resume", str(out), "--quiet"])
    one_line(code, err, message)
    assert not (out / stages.MODEL_FILE).exists()


@pytest.mark.parametrize(("stage_list", "message"), [
    ([{"name": "a"}, {"name": "b", "rule": {"state_dim": 4}}],
     "stages[1] (b): rule.signal_dim, rule.state_dim are 1, 4 but stages[0] (a)'s are 1, 8"),
    ([{"name": "a"}, {"name": "b", "rule.signal_dim": 2}],
     "stages[1] (b): rule.signal_dim, rule.state_dim are 2, 8 but stages[0] (a)'s are 1, 8"),
    ([{"name": "a", "rule.declaration": "reward_change"}, {"name": "b", "rule.declaration": "standard"}],
     "stages[1] (b): rule.declaration is 'standard' but stages[0] (a)'s is 'reward_change'"),
])
def test_every_stage_s_warm_start_is_checked_before_the_first_trains(tmp_path, stage_list, message):
    code, err = run_in_process([str(write_config(tmp_path, stage_list)), "--out", str(tmp_path / "run")])
    one_line(code, err, message)
    assert not (tmp_path / "run").exists()


def test_a_stage_with_inputs_added_to_the_rule_may_follow(tmp_path):
    stage_list = [{"name": "a"}, {"name": "b", "rule.declaration": "reward_change"}]
    plan = stages.load(write_config(tmp_path, stage_list), tmp_path / "run")
    assert [s.config.rule.declaration for s in plan] == ["standard", "reward_change"]


# ---------------------------------------------------------------------------- a full disk


def full_disk(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real = io.atomic_write_bytes

    def write(path: Any, data: bytes) -> None:
        if Path(path).name == name:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(io, "atomic_write_bytes", write)


def test_a_full_disk_at_stages_yaml_leaves_an_empty_folder_to_run_again(tmp_path, monkeypatch):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    full_disk(monkeypatch, stages.STAGES_FILE)
    code, err = run_in_process([str(config), "--out", str(out), "--quiet"])
    one_line(code, err, f"{out / 'stages.yaml'}: cannot write (No space left on device); nothing else was changed: "
                        f"free disk space, then run the command again")
    assert tree(out) == {}


def test_a_start_stopped_before_stages_yaml_starts_again(tmp_path):
    # Killed between the record of the stages and stages.yaml: nothing ran, the same command starts the run.
    out = tmp_path / "run"
    out.mkdir()
    (out / stages.STARTED_FILE).write_text("stages: []\n")
    code, err = run_in_process([str(write_config(tmp_path)), "--out", str(out), "--quiet"])
    assert code == 0, err
    assert (out / stages.STARTED_FILE).read_text() == (out / stages.STAGES_FILE).read_text()


@pytest.mark.parametrize("name", ["model.yaml", "rescored_model.yaml"])
def test_a_full_disk_at_a_shipped_model_is_one_line_and_resumes(finished, tmp_path, monkeypatch, name):
    out = copy(finished, tmp_path)
    (out / stages.MODEL_FILE).unlink()
    if name == "rescored_model.yaml":
        (out / "two" / name).unlink()
    full_disk(monkeypatch, name)
    code, err = run_in_process(["--resume", str(out), "--quiet"])
    one_line(code, err, f"{name}: cannot write (No space left on device); nothing else was changed: free disk "
                        f"space, then resume with --resume {out}")
    assert not (out / stages.MODEL_FILE).exists()
    monkeypatch.undo()
    assert run_in_process(["--resume", str(out), "--quiet"])[0] == 0
    assert (out / stages.MODEL_FILE).read_bytes() == (finished / stages.MODEL_FILE).read_bytes()


def test_a_full_disk_at_rescored_model_yaml_of_show_results(finished, tmp_path, monkeypatch, capsys):
    shutil.copytree(finished / "one", tmp_path / "alone")
    full_disk(monkeypatch, "rescored_model.yaml")
    assert run_main(show_results.main, [str(tmp_path / "alone"), "--rescore", "1", "--episodes", "2"]) == 2
    one_line(2, capsys.readouterr().err, "rescored_model.yaml: cannot write (No space left on device); nothing else "
                                         "was changed: free disk space, then run the command again")
    assert not (tmp_path / "alone" / "rescored_model.yaml").exists()
