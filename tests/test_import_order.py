"""Import order does not matter: with torch imported before metarl (a user's script, a notebook), a 2-thread
training still runs the native kernel on 2 threads and torch's own operations beside it on one, so that no OpenMP
worker spins next to the kernel's threads (the wait policy `import metarl` asks for is read when torch loads)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, needs_native

SCRIPT = """
import json, sys
import torch                      # first, as a notebook does: OpenMP has read its settings already
import metarl
from metarl.backends import lifetime
from metarl.cli.train import main

seen = {"run": set(), "setup": set()}
run, init, lifetimes = lifetime.Lifetime.run, lifetime.Lifetime.__init__, lifetime.run_lifetimes
inside = []  # the lifetimes of a generation (not the backend's one-off self-check, which runs on one thread)

def spy_lifetimes(*args, **kwargs):
    inside.append(True)
    try:
        return lifetimes(*args, **kwargs)
    finally:
        inside.pop()

def spy_run(self, *args, **kwargs):
    if inside:
        seen["run"].add(torch.get_num_threads())
    return run(self, *args, **kwargs)

def spy_init(self, *args, **kwargs):
    if inside:
        seen["setup"].add(torch.get_num_threads())
    return init(self, *args, **kwargs)

lifetime.Lifetime.run, lifetime.Lifetime.__init__, lifetime.run_lifetimes = spy_run, spy_init, spy_lifetimes
code = main(["configs/tiny.yaml", "--out", sys.argv[1], "--quiet", "--generations", "2",
             "--set", "runtime.threads=2", "--set", "runtime.native=true"])
print(json.dumps({"code": code, "run": sorted(seen["run"]), "setup": sorted(seen["setup"]),
                  "after": torch.get_num_threads()}))
"""


@needs_native
def test_a_two_thread_training_with_torch_imported_first_keeps_torch_off_the_kernels_cores(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "run")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                                       "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0 and (tmp_path / "run" / "best_model.yaml").is_file()
    assert result["run"] == [2]  # the kernel steps on the configured threads
    assert result["setup"] == [1]  # torch's own work around it on one: no OpenMP worker left spinning
    assert result["after"] == 2  # runtime.threads stays torch's setting outside the lifetimes
