"""Golden values: fitness pinned from the code as shipped, so that a change made the same
way in every backend (spec and native kernel alike) is still caught.

The native kernel's numbers are the same bits on every x86-64 CPU with FMA, whatever -march it
is built for (tests/test_portable.py), so its pins are exact: whole lifetimes, no tolerance.
Pinned with the portable kernel (-ffp-contract=off, explicit FMA, rational tanh) and the portable draws
(`metarl.core.rng.normal` from IEEE operations only: the actors' initial weights once came from MKL's log and
cos, which differ by CPU; re-pinned on 2026-12-01 for that reason). The spec
(`metarl.core.spec`) runs torch's CPU kernels, which may round differently from one machine to
the next: it runs only 50 steps, where rounding has not grown, with a tolerance. If you change
the rule on purpose, these values change: re-pin them with the commands in docs/architecture.md
("How to change the rule").
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import needs_native, run_script

from metarl.backends import lifetime
from metarl.config import RuntimeConfig, load
from metarl.core import rng
from metarl.evolve.trainer import Trainer, new_run
from metarl.runs import io

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"seed": ROOT / "tests/data/seed_best_model.yaml", "seed_12_6": ROOT / "tests/data/seed_best_model.yaml",
          "pendulum": ROOT / "experiments/pendulum_swingup/model.yaml",
          "double_pendulum": ROOT / "experiments/double_pendulum_swingup/model.yaml",
          "hidden_goal_up": ROOT / "experiments/pendulum_hidden_goal/model.yaml",
          "hidden_goal_down": ROOT / "experiments/pendulum_hidden_goal/model.yaml",
          "balance": ROOT / "experiments/pendulum_balance/model.yaml",
          "balance_reversed": ROOT / "experiments/pendulum_balance/model.yaml",
          "balance_gym": ROOT / "experiments/pendulum_balance/model.yaml",
          "near_up_episodes": ROOT / "experiments/balance_probes/model_near_up_episodes.yaml",
          # sensor noise, the goal flipped at a step drawn per lifetime, the motor either way, physics drawn per
          # lifetime, a floor under sigma, the rate per 0.05 s (floor16d, shipped until 2026-12-03); and the same with
          # the reward_change rule (its trace; the shipped rule, model.yaml, is this rule too)
          "reward_balance": ROOT / "experiments/pendulum_reward_balance/attempts/model_floor16d.yaml",
          "reward_change": ROOT / "experiments/pendulum_reward_balance/model_change.yaml"}
KEY_SEED = 2024
# Native kernel: 16 individuals, the model's whole lifetime, keys individual_keys(2024, 0, 0, 0..15).
NATIVE = {
    "seed": [
        37.993003845214844, 27.29678636789322, 39.95860743522644, 25.721347451210022, 39.918002128601074,
        25.71441215276718, 36.79696846008301, 34.418750166893005, 38.33986687660217, 34.07533115148544,
        33.90792053937912, 37.34085536003113, 38.36390519142151, 32.65276741981506, 39.77439486980438,
        30.98175084590912
    ],
    "seed_12_6": [
        27.379150986671448, 29.77727836370468, 35.630385518074036, 31.827828228473663, 38.81418251991272,
        34.09923881292343, 26.94454401731491, 39.84172987937927, 26.34615707397461, 27.014016211032867,
        25.716951370239258, 39.120251297950745, 31.26785945892334, 25.727415204048157, 33.28142333030701,
        25.70899850130081
    ],
    "pendulum": [
        361.9962594509125, 317.31528306007385, 366.6720457673073, 363.57155948877335, 352.45384407043457,
        96.20753008127213, 351.77609646320343, 353.99278193712234, 369.50131022930145, 381.83151936531067,
        353.94689655303955, 242.6962946653366, 371.8236213326454, 347.5011969804764, 349.3243155479431,
        6.78069144487381
    ],
    "double_pendulum": [
        179.09224200248718, 167.06237041950226, 168.2215821146965, 167.15076053142548, 170.444207072258,
        178.50362372398376, 174.95258140563965, 180.44392853975296, 168.77507263422012, 166.56528162956238,
        182.79745519161224, 166.76591229438782, 172.47908073663712, 172.09914523363113, 160.24201202392578,
        177.2712031006813
    ],
    "hidden_goal_up": [
        429.6994459629059, 430.6349648833275, 430.08576959371567, 415.8821126818657, 400.6304072737694,
        431.96349281072617, 410.3100737333298, 432.8202518224716, 435.8291309475899, 421.7777414917946,
        434.60046446323395, 429.5922890305519, 420.1712945699692, 428.4324676990509, 428.5329849123955,
        437.2503989338875
    ],
    "hidden_goal_down": [
        -7.109402716159821, -7.21692556142807, -7.025830686092377, -8.546403050422668, -7.387956857681274,
        -7.163151979446411, -6.105025470256805, -7.481598854064941, -7.625432133674622, -6.646054446697235,
        -7.638551831245422, -7.062283873558044, -7.483520209789276, -7.548688352108002, -7.05129873752594,
        -7.50693815946579
    ],
    "balance": [
        1725.7689119577408, 1717.468303501606, 1719.8305455446243, 1690.0207257270813, 1712.5890555381775,
        1716.9546040296555, 1662.1149763464928, 1699.7853090763092, 1712.1224169135094, 1727.9459174871445,
        1724.278743982315, 1716.928439617157, 1692.5330369472504, 1716.4427230358124, 1725.0625730156898,
        1545.5643894672394
    ],
    "balance_reversed": [
        1739.0838400125504, 1734.9637226462364, 1740.08643835783, 1731.8900778889656, 1730.050701379776,
        1744.8066920042038, 1740.2597185969353, 1743.4748644828796, 1736.9681254029274, 1746.705626487732,
        1740.2247721552849, 1734.989789366722, 1708.7171278595924, 1729.2170172333717, 1742.825494170189,
        1739.0537734627724
    ],
    "balance_gym": [
        -2945.7034304244444, -7090.907984934747, -8662.983699798584, -6857.6626997012645, -2863.2450445450377,
        -2414.713164122775, -8697.031792640686, -6840.342940500006, -9146.833690099418, -7328.116793639958,
        -3095.984644898679, -8665.61660194397, -8638.312191963196, -7983.864933013916, -2000.5462588409428,
        -2842.5064178227913
    ],
    "near_up_episodes": [
        1556.3847447037697, 1576.1924402713776, 1612.6047767400742, 1538.3173560500145, 1630.1864970326424,
        1570.4157069921494, 1426.3445115089417, 1614.5799816846848, 1580.9001165032387, 1634.9690300226212,
        1625.82644623518, 1653.067457318306, 1546.0072965025902, 1473.5273734927177, 1516.0376698374748,
        1543.4597467184067
    ],
    "reward_balance": [
        129.0572224855423, 654.1268173456192, 336.05891793966293, 334.0990189909935, 961.4077815413475,
        255.64411044120789, 136.45103096961975, 277.22384613752365, 107.46331065893173, 391.38948637247086,
        1381.8952051401138, 1333.4790208935738, 501.8538152575493, 720.0889957547188, 51.22216176986694,
        1199.2365876436234
    ],
    "reward_change": [
        154.25699150562286, 580.4278792142868, 412.98832482099533, 301.58964866399765, 1141.7163852453232,
        235.57072013616562, -308.0047450065613, 180.83136403560638, 21.78539079427719, 566.0597616434097,
        1301.1952002048492, 1233.6090904474258, 423.6774773001671, 554.3341738581657, 57.854764223098755,
        1304.863351404667
    ],
}
# The spec (`metarl.core.spec`): the first 4 of those individuals, 50 steps.
SPEC = {
    "seed": [52.7368509, 58.0224331, 93.8324311, 57.5251873],
    "seed_12_6": [58.0003937, 59.3665439, 43.8681805, 73.5192919],
    "pendulum": [0.13297075, 0.217452765, 0.119032025, 0.161896825],
    "double_pendulum": [0.0931735635, 0.0208216906, 0.0100758076, 0.0178858638],
    "hidden_goal_up": [0.658884346, 0.740265369, 0.655765057, 0.866657555],
    "hidden_goal_down": [-0.658710122, -0.740691125, -0.655777931, -0.867488682],
    "balance": [2.04031521, 2.31988978, 1.96869564, 2.52769899],
    "balance_reversed": [2.48042274, 2.48554724, 2.18587786, 1.92739505],
    "balance_gym": [-456.572335, -421.874024, -464.838108, -447.871068],
    "near_up_episodes": [97.3132032, 76.3856055, 74.4133534, 90.8983117],
    "reward_balance": [0.660984933, 1.73473078, 2.27214962, 0.730032563],
    "reward_change": [0.675713062, 1.84526575, 2.15495706, 0.714508832],
}
SPEC_STEPS = 50


def model_case(name: str, native: bool) -> tuple[io.SavedModel, object]:
    """The saved model and its config on the chosen path; ``seed_12_6`` is the seed model with two hidden
    layers of different widths (12, 6), so that a change of the rule's aggregation shows."""
    model = io.load_model(MODELS[name])
    config = model.config.replace(runtime=RuntimeConfig(native=native, threads=1))
    if name == "seed_12_6":
        config = config.replace(actor=dataclasses.replace(config.actor, hidden=[12, 6]))
    if name == "hidden_goal_down":  # the other goal of the hidden-goal task: the reward is -height
        config = config.replace(env=dataclasses.replace(config.env, goal=-1))
    if name == "balance_reversed":
        config = config.replace(env=dataclasses.replace(config.env, action_sign=-1))
    # Pins the `gym` reward's formula (the rule sees it, so the lifetime changes too). Re-pinned when the reward
    # moved to the state before the step, as Gymnasium's Pendulum-v1 scores it.
    if name == "balance_gym":
        config = config.replace(env=dataclasses.replace(config.env, reward="gym"))
    return model, config


def run(name: str, pop: int, *, native: bool, steps: int | None = None) -> torch.Tensor:
    model, config = model_case(name, native)
    genomes = model.genome.reshape(1, -1).expand(pop, -1).contiguous()
    keys = rng.individual_keys(KEY_SEED, 0, 0, torch.arange(pop))
    return lifetime.run_lifetimes(genomes, model.layout, config, keys, steps=steps,
                                  backend="native" if native else "spec")[0]


@pytest.mark.parametrize("name", list(NATIVE))
def test_native_fitness_of_the_shipped_models_is_pinned(name: str) -> None:
    got = run(name, 16, native=True)
    assert got.tolist() == NATIVE[name]


@pytest.mark.parametrize("name", list(SPEC))
def test_spec_fitness_of_the_shipped_models_is_pinned(name: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the plain rule's many small products are fastest on one thread
    try:
        got = run(name, 4, native=False, steps=SPEC_STEPS)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(got, torch.tensor(SPEC[name], dtype=torch.float64), rtol=1e-5, atol=1e-6)
    # ... and the native kernel agrees with the spec there.
    torch.testing.assert_close(run(name, 4, native=True, steps=SPEC_STEPS), got, rtol=1e-5, atol=1e-6)


def log_rows(path: Path, count: int) -> list[list[float]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))[:count]
    return [[float(row[k]) for k in ("best", "mean", "median", "worst", "best_ever")] for row in rows]


@pytest.mark.slow
def test_the_first_generations_of_the_documented_log_are_reproduced(tmp_path: Path) -> None:
    # experiments/pendulum_swingup/pendulum_swingup.yaml as shipped
    # (1,000 individuals x 2 lifetimes x 500 steps), 2 generations (the second bred from the first).
    # experiments/pendulum_swingup/log.csv was written by that command with the portable kernel: the same bits on
    # any x86-64 CPU with FMA.
    config = load(ROOT / "experiments/pendulum_swingup/pendulum_swingup.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(config.runtime.threads)
    try:
        trainer = Trainer(new_run(config), tmp_path, writer=False)
        got = [[row[k] for k in ("best", "mean", "median", "worst", "best_ever")]
               for row in (trainer.run_generation() for _ in range(2))]
    finally:
        torch.set_num_threads(threads)
    assert got == log_rows(ROOT / "experiments/pendulum_swingup/log.csv", 2)


OTHER_CPU = """
import json, sys
sys.path.insert(0, "tests")
import test_golden
print(json.dumps({name: test_golden.run(name, 16, native=True).tolist() for name in ("seed", "hidden_goal_up")}))
"""


@pytest.mark.slow
@needs_native
def test_native_pins_hold_on_other_cpus_math_library_paths() -> None:
    # MKL_CBWR and ATEN_CPU_CAPABILITY put torch's MKL and ATen on the code paths of other CPUs (their log, cos
    # and sqrt change): nothing that feeds the kernel may follow them. The pins failed on an Intel Xeon once,
    # pinned on an AMD EPYC, because the actors' initial weights did.
    proc = run_script("-c", OTHER_CPU, env={"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"})
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got == {name: NATIVE[name] for name in got}
