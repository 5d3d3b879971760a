"""Golden values: fitness pinned from the code as shipped, so that a change made the same
way in every backend (spec and native kernel alike) is still caught.

The native kernel's numbers are the same bits on every x86-64 CPU with FMA, whatever -march it
is built for (tests/test_portable.py), so its pins are exact: whole lifetimes, no tolerance.
Pinned with the portable kernel (-ffp-contract=off, explicit FMA, rational tanh). The spec
(`metarl.core.spec`) runs torch's CPU kernels, which may round differently from one machine to
the next: it runs only 50 steps, where rounding has not grown, with a tolerance. If you change
the rule on purpose, these values change: re-pin them with the commands in docs/architecture.md
("How to change the rule").
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

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
          "near_up_episodes": ROOT / "experiments/balance_probes/model_near_up_episodes.yaml"}
KEY_SEED = 2024
# Native kernel: 16 individuals, the model's whole lifetime, keys individual_keys(2024, 0, 0, 0..15).
NATIVE = {
    "seed": [
        37.993003845214844, 27.296791672706604, 39.95860743522644, 25.721347451210022, 39.918002247810364,
        25.71441227197647, 36.796966195106506, 34.418750166893005, 38.33986687660217, 34.07533115148544,
        33.907908499240875, 37.34085536003113, 38.36390495300293, 32.65276741981506, 39.77439534664154,
        30.981746315956116
    ],
    "seed_12_6": [
        27.379151046276093, 29.77727836370468, 35.630385518074036, 31.827828228473663, 38.81418812274933,
        34.099227130413055, 26.94454401731491, 39.84173023700714, 26.34615707397461, 27.014016211032867,
        25.716951370239258, 39.120251297950745, 31.26785945892334, 25.72741538286209, 33.28142333030701,
        25.70899850130081
    ],
    "pendulum": [
        321.0809127688408, 298.59638130664825, 238.21713382005692, 345.2222725749016, 219.88403916358948,
        307.3524699807167, 352.9734943509102, 341.5229586958885, 366.4120584130287, 341.1783773303032,
        319.89571249485016, 341.2040247321129, 290.1456386446953, 303.31868547201157, 317.13478261232376,
        326.34174489974976
    ],
    "double_pendulum": [
        119.19268834590912, 171.48705285787582, 173.847982943058, 168.81934016942978, 179.57730174064636,
        179.99964833259583, 182.41295820474625, 183.35317051410675, 166.60717421770096, 170.8298254609108,
        185.38701629638672, 170.8904937505722, 178.2147581577301, 161.41215354204178, 164.2686289548874,
        177.2375100851059
    ],
    "hidden_goal_up": [
        423.00467735528946, 422.7929291129112, 430.8251439332962, 429.84770053625107, 419.5630010962486,
        410.6108226776123, 419.2591428756714, 427.0909584760666, 424.0035974383354, 425.49596935510635,
        419.61293148994446, 417.0468019247055, 401.44727927446365, 421.5035673379898, 420.53066551685333,
        428.4902750849724
    ],
    "hidden_goal_down": [
        -7.6830809116363525, -6.528582572937012, -8.51800811290741, -7.3870216608047485, -6.534827709197998,
        -10.22007167339325, -6.21590131521225, -5.451757073402405, -6.5517759919166565, -6.85058069229126,
        -6.659843921661377, -8.688075482845306, -5.943670153617859, -6.314351975917816, -6.443130671977997,
        -7.0972025990486145
    ],
    "balance": [
        1725.76704287529, 1717.4573582410812, 1719.8302684426308, 1690.0320905447006, 1712.5914155840874,
        1716.9587827920914, 1662.1221033334732, 1699.7891325354576, 1712.1303090453148, 1727.954305768013,
        1724.2760993242264, 1716.930107653141, 1692.5183165669441, 1716.446675002575, 1725.0550192594528,
        1545.5649992227554
    ],
    "balance_reversed": [
        1739.0838323235512, 1734.9637083411217, 1740.086463868618, 1731.890104174614, 1730.0506454706192,
        1744.806702196598, 1740.259731054306, 1743.4748685359955, 1736.9681223630905, 1746.7056540846825,
        1740.224779188633, 1734.9898409843445, 1708.7172222137451, 1729.217017531395, 1742.8255918622017,
        1739.0537627339363
    ],
    "balance_gym": [
        -2945.5861788985785, -7089.4358226805925, -8662.983578681946, -6866.123237832449, -2863.256986025255,
        -2413.920057958807, -8697.032004356384, -6840.295748550445, -9146.83026759699, -7328.138803116977,
        -3095.923123158049, -8665.616618156433, -8638.312128067017, -7983.872222185135, -2000.5202434724197,
        -2842.559657774167
    ],
    "near_up_episodes": [
        1586.5104165673256, 1613.9788854122162, 1559.9282371401787, 1603.2353323101997, 1643.876955628395,
        1639.9807478785515, 1545.3137366771698, 1635.931499660015, 1647.476460635662, 1657.4042432904243,
        1649.5696773529053, 1598.073738873005, 1581.2420402765274, 1590.081342458725, 1541.047460436821,
        1641.4327634572983
    ],
}
# The spec (`metarl.core.spec`): the first 4 of those individuals, 50 steps.
SPEC = {
    "seed": [52.7368509, 58.022435, 93.8324311, 57.5251873],
    "seed_12_6": [58.0003937, 59.3665439, 43.8681871, 73.5192842],
    "pendulum": [0.0202645659, 0.206211448, 0.0384557247, 0.158455551],
    "double_pendulum": [0.0924147367, 0.0277662873, 0.0184844732, 0.0238237381],
    "hidden_goal_up": [0.646474242, 0.749676585, 0.676146448, 0.70531559],
    "hidden_goal_down": [-0.646331131, -0.749828041, -0.676259935, -0.705268979],
    "balance": [2.04031616, 2.31989032, 1.96869564, 2.52769899],
    "balance_reversed": [2.48042274, 2.48554724, 2.18587786, 1.92739326],
    "balance_gym": [-456.572335, -421.874059, -464.838119, -447.871111],
    "near_up_episodes": [75.0939177, 75.4502609, 71.2887275, 74.7391275],
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
    # (1,000 individuals x 2 lifetimes x 500 steps), 3 generations.
    # experiments/pendulum_swingup/log.csv was written by that command with the portable kernel: the same bits on
    # any x86-64 CPU with FMA.
    config = load(ROOT / "experiments/pendulum_swingup/pendulum_swingup.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(config.runtime.threads)
    try:
        trainer = Trainer(new_run(config), tmp_path, writer=False)
        got = [[row[k] for k in ("best", "mean", "median", "worst", "best_ever")]
               for row in (trainer.run_generation() for _ in range(3))]
    finally:
        torch.set_num_threads(threads)
    assert got == log_rows(ROOT / "experiments/pendulum_swingup/log.csv", 3)
