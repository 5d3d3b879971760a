"""Experiment folders a reader can use: short pages that lead with the result, few files at the top, and no file
that names a path of the machine it was made on."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import ROOT

EXPERIMENTS = sorted(p for p in (ROOT / "experiments").iterdir() if p.is_dir() and not p.name.startswith("."))
MAX_PAGE_BYTES = 12 * 1024
MAX_TOP_LEVEL = 40
# A home or work folder of some machine: home/<user>, Users/<user>, root or work at the root of the file system.
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:home/[\w.-]+/|Users/[\w.-]+/|root/|work/)")


@pytest.mark.parametrize("folder", EXPERIMENTS, ids=lambda p: p.name)
def test_an_experiment_page_is_short_and_leads_with_its_result(folder) -> None:
    page = folder / "README.md"
    assert len(page.read_bytes()) <= MAX_PAGE_BYTES, f"{page}: over 12 KB; history goes to history.md"
    assert len(list(folder.iterdir())) <= MAX_TOP_LEVEL, f"{folder}: over {MAX_TOP_LEVEL} entries at the top"
    head = page.read_text()[:3000]
    assert "```bash" in head, f"{page}: the command that reproduces the result comes first"


def test_no_committed_file_names_a_path_of_the_machine_it_was_made_on() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    found = []
    for name in filter(None, files):
        path = ROOT / name.decode()
        if not path.is_file() or path.stat().st_size > 2**22:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (images)
        for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{name.decode()}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found[:20])
