"""The sweep's search space, sampler, pruner and timing-free pruning decisions (trader.sweep.space)."""

from __future__ import annotations

import importlib.util
import itertools
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState, create_trial

from trader.config import Settings, load_settings
from trader.errors import ConfigError, DataError
from trader.strategies import get_strategy
from trader.sweep.space import (
    InfeasibleParams,
    SearchParam,
    directions,
    grid_values,
    make_pruner,
    make_sampler,
    objective_values,
    prune_decision,
    search_space,
    suggest,
    trial_settings,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [REPO / "configs" / "base.yaml", REPO / "configs" / "demo.yaml"]
FAST = "composer.strategies[0].params.fast"
SLOW = "composer.strategies[0].params.slow"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def demo(*overrides: str) -> Settings:
    return load_settings(CONFIGS, list(overrides), env={})


def with_space(space: dict[str, Any], *overrides: str) -> Settings:
    return demo(f"sweep.space={_flow(space)}", *overrides)


def _flow(value: Any) -> str:
    """A Python mapping as a YAML flow value for --set."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"'{k}': {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


# -- the space --------------------------------------------------------------------------------------------


def test_default_space_covers_every_tunable_param_of_the_demo_composer() -> None:
    settings = demo()
    space = {sp.key: sp for sp in search_space(settings)}
    expected = {}
    for i, entry in enumerate(settings.composer.strategies):
        for p in get_strategy(entry.name).params:
            if p.tunable:
                expected[f"composer.strategies[{i}].params.{p.name}"] = p
    assert set(space) == set(expected)
    assert len(space) >= 7  # sma_cross 2, rsi_reversion 4, donchian_breakout 2 tunables
    for key, p in expected.items():
        sp = space[key]
        assert sp.kind == p.kind, key
        if p.kind == "categorical":
            assert sp.choices == p.choices
            continue
        assert (sp.low, sp.high, sp.log) == (p.low, p.high, p.log), key
        assert sp.step == p.step, key
        assert list(sp.grid) == p.grid_values(settings.walkforward.grid_points_per_param)
    # slow is declared above fast: drawn after it, from above it
    keys = list(space)
    assert space[SLOW].above == FAST and keys.index(SLOW) > keys.index(FAST)
    assert all(sp.above is None for k, sp in space.items() if k != SLOW)


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("composer.lookbak", "composer.lookbak"),
        ("risk.nonexistent_limit", "risk.nonexistent_limit"),
        ("composer.strategies[0].params.fats", "composer.strategies[0].params.fats"),
        ("composer.strategies[7].params.fast", "composer.strategies[7].params.fast"),
    ],
)
def test_a_space_key_that_does_not_exist_is_refused_naming_it(key: str, needle: str) -> None:
    settings = with_space({key: {"low": 1, "high": 5}})
    with pytest.raises(ConfigError, match=re.escape(needle)):
        search_space(settings)


def test_space_ranges_are_checked_against_the_settings_and_the_strategy() -> None:
    with pytest.raises(ConfigError, match=r"risk\.max_drawdown"):
        search_space(with_space({"risk.max_drawdown": {"low": 0.1, "high": 2.0}}))  # le=1
    with pytest.raises(ConfigError, match=r"strategy's bounds 2\.\.100"):
        search_space(with_space({FAST: {"low": 1, "high": 20}}))
    with pytest.raises(ConfigError, match="whole numbers"):
        search_space(with_space({"composer.lookback": {"type": "float", "low": 10, "high": 20}}))
    with pytest.raises(ConfigError, match="choices"):
        search_space(with_space({"data.sanity.mode": {"low": 1, "high": 2}}))


def test_explicit_space_infers_kinds_and_draws_valid_settings() -> None:
    settings = with_space(
        {
            "composer.lookback": {"low": 10, "high": 60, "step": 5},
            "risk.max_drawdown": {"low": 0.1, "high": 0.3},
            "composer.hold_on_nan": {"choices": [False, True]},
            "composer.temperature": {"low": 0.1, "high": 10.0, "log": True},
        }
    )
    space = {sp.key: sp for sp in search_space(settings)}
    assert space["composer.lookback"].kind == "int"  # the field is an int
    assert space["risk.max_drawdown"].kind == "float"
    assert space["composer.hold_on_nan"].kind == "categorical"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(40):
        params = suggest(study.ask(), list(space.values()))
        variant = trial_settings(settings, params)
        assert variant.composer.lookback == params["composer.lookback"]
        assert (params["composer.lookback"] - 10) % 5 == 0 and 10 <= params["composer.lookback"] <= 60
        assert 0.1 <= variant.risk.max_drawdown <= 0.3
        assert 0.1 <= variant.composer.temperature <= 10.0
        assert variant.composer.hold_on_nan is params["composer.hold_on_nan"]
        assert variant.composer.strategies == settings.composer.strategies  # untouched


def test_an_explicit_strategy_range_keeps_the_strategy_step() -> None:
    lower = "composer.strategies[1].params.lower"  # rsi_reversion: RSI points on a 1.0 grid
    (sp,) = search_space(with_space({lower: {"low": 20, "high": 40}}))
    assert (sp.kind, sp.low, sp.high, sp.step) == ("float", 20.0, 40.0, 1.0)
    (sp,) = search_space(with_space({lower: {"low": 20, "high": 40, "step": 5}}))
    assert sp.step == 5.0 and grid_values(sp) == [20.0, 25.0, 30.0, 35.0, 40.0]


def test_above_is_respected_over_500_random_draws() -> None:
    settings = demo()
    space = search_space(settings)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11))
    by_key = {sp.key: sp for sp in space}
    for n in range(500):
        params = suggest(study.ask(), space)
        assert params[SLOW] > params[FAST], params
        for key, value in params.items():
            sp = by_key[key]
            if sp.kind == "categorical":
                assert value in sp.choices
            else:
                assert sp.low <= value <= sp.high, (key, value)
        if n % 50 == 0:  # every draw validates; checking a sample keeps the test fast
            variant = trial_settings(settings, params)
            assert variant.composer.strategies[0].params["slow"] == params[SLOW]


def test_above_against_a_fixed_value_clamps_the_range() -> None:
    # only slow is swept; fast stays at the demo's 10, so slow must be drawn from 11 up
    settings = with_space({SLOW: {"low": 5, "high": 30}})
    (sp,) = search_space(settings)
    assert (sp.low, sp.high, sp.above) == (11, 30, None)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    assert all(suggest(study.ask(), [sp])[SLOW] > 10 for _ in range(100))
    # and a range with no room at all is refused
    with pytest.raises(ConfigError, match="no room"):
        search_space(with_space({SLOW: {"low": 5, "high": 9}}))
    # only fast swept: it stays below the configured slow (50)
    (fast,) = search_space(with_space({FAST: {"low": 2, "high": 100}}))
    assert fast.high == 49


def test_trial_settings_names_the_bad_value() -> None:
    settings = demo()
    with pytest.raises(ConfigError, match=r"composer\.lookback"):
        trial_settings(settings, {"composer.lookback": -3})
    with pytest.raises(ConfigError, match="fast"):
        trial_settings(settings, {FAST: 1000})  # out of sma_cross's declared bounds


# -- samplers ---------------------------------------------------------------------------------------------


def _run(settings: Settings, n: int) -> list[dict[str, Any]]:
    space = search_space(settings)
    study = optuna.create_study(directions=directions(settings), sampler=make_sampler(settings, space))
    drawn = []
    for _ in range(n):
        trial = study.ask()
        params = suggest(trial, space)
        drawn.append(params)
        # a deterministic objective of the params, so TPE has something to model after its startup
        study.tell(trial, -abs(params[FAST] - 20) - abs(params[SLOW] - 120) / 10)
    return drawn


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_seeded_sampler_gives_the_same_suggestions_twice(sampler: str) -> None:
    settings = demo(f"sweep.sampler={sampler}", "sweep.seed=5")
    first, second = _run(settings, 14), _run(settings, 14)  # TPE models after 10 startup trials
    assert first == second
    assert _run(demo(f"sweep.sampler={sampler}", "sweep.seed=6"), 14) != first
    # no sweep.seed: engine.rng_seed seeds it
    assert _run(demo(f"sweep.sampler={sampler}", "engine.rng_seed=5"), 14) == first


def test_grid_sampler_enumerates_the_grid() -> None:
    settings = with_space(
        {
            "composer.lookback": {"low": 10, "high": 30, "step": 10},
            "composer.temperature": {"choices": [0.5, 1.0]},
            "composer.min_confidence": {"low": 0.0, "high": 0.2, "step": 0.1},
        },
        "sweep.sampler=grid",
    )
    space = search_space(settings)
    study = optuna.create_study(sampler=make_sampler(settings, space))
    seen = []
    for _ in range(3 * 2 * 3):
        trial = study.ask()
        p = suggest(trial, space)
        seen.append((p["composer.lookback"], p["composer.temperature"], p["composer.min_confidence"]))
        study.tell(trial, 0.0)
    expected = set(itertools.product([10, 20, 30], [0.5, 1.0], [0.0, 0.1, 0.2]))
    assert study.sampler.is_exhausted(study)
    assert len(seen) == len(expected) and set(seen) == expected


def test_grid_points_that_break_above_are_refused_as_pruned() -> None:
    settings = with_space(
        {FAST: {"low": 10, "high": 30, "step": 10}, SLOW: {"low": 20, "high": 40, "step": 10}},
        "sweep.sampler=grid",
    )
    space = search_space(settings)
    assert grid_values(space[0]) == [10, 20, 30] and grid_values(space[1]) == [20, 30, 40]
    study = optuna.create_study(sampler=make_sampler(settings, space))
    feasible, infeasible = set(), 0
    for _ in range(9):
        trial = study.ask()
        try:
            p = suggest(trial, space)
        except InfeasibleParams as exc:
            assert isinstance(exc, optuna.TrialPruned)
            infeasible += 1
            study.tell(trial, state=TrialState.PRUNED)
            continue
        feasible.add((p[FAST], p[SLOW]))
        study.tell(trial, 0.0)
    assert feasible == {(f, s) for f in (10, 20, 30) for s in (20, 30, 40) if s > f}
    assert infeasible == 3


def test_grid_refuses_a_continuous_float() -> None:
    settings = with_space({"risk.max_drawdown": {"low": 0.1, "high": 0.3}}, "sweep.sampler=grid")
    with pytest.raises(ConfigError, match=r"risk\.max_drawdown.*step"):
        make_sampler(settings, search_space(settings))
    assert grid_values(SearchParam("x", "float", 0.1, 0.3, 0.1, False, ())) == [0.1, 0.2, 0.3]


def test_cmaes_with_two_objectives_is_refused() -> None:
    settings = demo("sweep.sampler=cmaes", "sweep.objectives=[sharpe, max_drawdown]")
    with pytest.raises(ConfigError, match=r"cmaes.*2"):
        make_sampler(settings, search_space(settings))
    single = demo("sweep.sampler=cmaes")
    if importlib.util.find_spec("cmaes") is None:
        with pytest.raises(ConfigError, match="cmaes"):
            make_sampler(single, search_space(single))
    else:
        assert isinstance(make_sampler(single, search_space(single)), optuna.samplers.CmaEsSampler)


def test_multi_objective_tpe() -> None:
    settings = demo("sweep.objectives=[sharpe, max_drawdown]")
    assert directions(settings) == ["maximize", "minimize"]
    assert isinstance(make_sampler(settings, search_space(settings)), optuna.samplers.TPESampler)
    assert isinstance(make_pruner(settings), optuna.pruners.NopPruner)  # optuna cannot prune these


def test_objective_values() -> None:
    settings = demo("sweep.objectives=[sharpe, max_drawdown]")
    assert objective_values({"sharpe": 1.25, "max_drawdown": 0.1, "score": 3.0}, settings) == [1.25, 0.1]
    # undefined metrics are the worst value, not a failed trial
    assert objective_values({"sharpe": float("nan"), "max_drawdown": None}, settings) == [-math.inf, math.inf]
    with pytest.raises(DataError, match="max_drawdown"):
        objective_values({"sharpe": 1.0}, settings)


# -- pruning --------------------------------------------------------------------------------------------


def _journal_study(tmp_path: Path, pruner: optuna.pruners.BasePruner, name: str) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(tmp_path / f"{name}.log")))
    return optuna.create_study(storage=storage, study_name=name, pruner=pruner, direction="maximize")


def _finished(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_median_pruning_known_answer_equals_optuna(tmp_path: Path) -> None:
    settings = demo("sweep.pruner=median", "sweep.pruner_startup_trials=5", "sweep.pruner_warmup_folds=1")
    study = _journal_study(tmp_path, make_pruner(settings), "median")
    # six finished trials whose fold-1 scores are 1..6: the median at fold 1 is 3.5
    for i in range(6):
        study.add_trial(create_trial(value=float(i), intermediate_values={0: 0.0, 1: float(i + 1)}))
    for fold0, fold1, expected in [(0.0, 1.0, True), (0.0, 3.0, True), (0.0, 5.0, False), (4.0, 1.0, False)]:
        # pruned trials do not count; the completed one (5.0) shifts the median to 4.0 for the last case
        finished = _finished(study)
        trial = study.ask()
        trial.report(fold0, 0)
        # fold 0 is warm-up: never pruned
        assert prune_decision(make_pruner(settings), finished, trial, 0, fold0) is False
        assert bool(trial.should_prune()) is False
        trial.report(fold1, 1)
        mine = prune_decision(make_pruner(settings), finished, trial, 1, fold1)
        # the median rule compares the trial's best fold so far (4.0 on fold 0 in the last case)
        assert mine is expected
        assert bool(trial.should_prune()) is mine
        study.tell(
            trial, state=TrialState.PRUNED if mine else TrialState.COMPLETE, values=None if mine else 0.0
        )
    # fewer complete trials than pruner_startup_trials: nothing is pruned
    strict = demo("sweep.pruner=median", "sweep.pruner_startup_trials=50")
    trial = study.ask()
    trial.report(0.0, 1)
    assert prune_decision(make_pruner(strict), finished, trial, 1, 0.0) is False


def test_successive_halving_known_answer_equals_optuna(tmp_path: Path) -> None:
    settings = demo("sweep.pruner=successive_halving", "sweep.pruner_startup_trials=5")
    study = _journal_study(tmp_path, make_pruner(settings), "sha")
    # rung 0 is fold 1 (min_resource = warm-up folds = 1); six finished trials scored 1..6 there
    for i in range(6):
        study.add_trial(
            create_trial(
                value=float(i),
                intermediate_values={0: 0.0, 1: float(i + 1)},
                system_attrs={"completed_rung_0": float(i + 1)},
            )
        )
    # reduction factor 3: of 7 competitors the best 7 // 3 = 2 are promoted, i.e. a score >= 5
    for score, expected in [(0.5, True), (4.9, True), (5.0, False), (6.5, False)]:
        finished = _finished(study)
        trial = study.ask()
        trial.report(0.0, 0)
        assert (
            prune_decision(make_pruner(settings), finished, trial, 0, 0.0, set_system_attr=_ignore) is False
        )
        assert bool(trial.should_prune()) is False
        trial.report(score, 1)
        mine = prune_decision(make_pruner(settings), finished, trial, 1, score, set_system_attr=_ignore)
        assert mine is expected, score
        assert bool(trial.should_prune()) is mine  # optuna's own decision (it records the rung value)
        study.tell(trial, state=TrialState.PRUNED)


def _ignore(key: str, value: Any) -> None:
    """Leave the storage to optuna's own call, which records the same rung value."""


@pytest.mark.parametrize("pruner", ["median", "successive_halving"])
def test_frozen_decisions_equal_optuna_over_a_sequential_study(tmp_path: Path, pruner: str) -> None:
    # Sequentially, the trials finished before a trial was asked are exactly the study's other trials,
    # so the frozen-view decision must equal optuna's at every fold of every trial.
    settings = demo(f"sweep.pruner={pruner}", "sweep.pruner_startup_trials=3", "sweep.pruner_warmup_folds=1")
    study = _journal_study(tmp_path, make_pruner(settings), pruner)
    rng = np.random.default_rng(17)
    decisions = []
    for _ in range(30):
        finished = _finished(study)
        trial = study.ask()
        skill = rng.normal()
        pruned = False
        for fold in range(6):
            value = float(skill + rng.normal(scale=0.5))
            trial.report(value, fold)
            mine = prune_decision(
                make_pruner(settings), finished, trial, fold, value, set_system_attr=_ignore
            )
            theirs = bool(trial.should_prune())
            assert mine is theirs, (trial.number, fold)
            decisions.append(mine)
            if theirs:
                pruned = True
                break
        study.tell(trial, state=TrialState.PRUNED) if pruned else study.tell(trial, float(skill))
    assert any(decisions) and not all(decisions)  # the comparison covered both answers


def test_frozen_decision_ignores_trials_running_meanwhile(tmp_path: Path) -> None:
    settings = demo("sweep.pruner=successive_halving", "sweep.pruner_startup_trials=0")
    study = _journal_study(tmp_path, make_pruner(settings), "concurrent")
    for i in range(2):  # rung-0 scores 0 and 1
        study.add_trial(
            create_trial(
                value=0.0, intermediate_values={1: float(i)}, system_attrs={"completed_rung_0": float(i)}
            )
        )
    finished = _finished(study)
    judged = study.ask()
    judged.report(1.5, 1)
    before = prune_decision(make_pruner(settings), finished, judged, 1, 1.5, set_system_attr=_ignore)
    # another trial, asked later, races ahead and records a much better rung value
    other = study.ask()
    other.report(100.0, 1)
    assert not other.should_prune()
    after = prune_decision(make_pruner(settings), finished, judged, 1, 1.5, set_system_attr=_ignore)
    assert before is after is False
    # whereas optuna's live view now sees the racer: 1.5 is no longer the best of 4 (the top third)
    assert judged.should_prune()


def test_prune_decision_records_rung_values_for_a_live_trial(tmp_path: Path) -> None:
    settings = demo("sweep.pruner=successive_halving", "sweep.pruner_startup_trials=0")
    study = _journal_study(tmp_path, make_pruner(settings), "record")
    trial = study.ask()
    trial.report(2.0, 1)
    assert prune_decision(make_pruner(settings), [], trial, 1, 2.0) is False
    stored = study.get_trials(deepcopy=False)[0]
    assert stored.system_attrs["completed_rung_0"] == 2.0


def test_multi_objective_never_prunes() -> None:
    trial = create_trial(values=[0.0, 0.0], intermediate_values={0: -10.0})
    done = [create_trial(values=[1.0, 0.1], intermediate_values={0: 5.0}) for _ in range(10)]
    pruner = optuna.pruners.MedianPruner(n_startup_trials=0)
    assert prune_decision(pruner, done, trial, 0, -10.0, directions=["maximize", "minimize"]) is False
    # the same with one objective is pruned (so the False above is about the objectives)
    assert prune_decision(pruner, done, trial, 0, -10.0, directions=["maximize"]) is True


def test_the_example_space_in_sweep_yaml_is_valid(tmp_path: Path) -> None:
    text = (REPO / "configs" / "sweep.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    start = lines.index("  # space:")
    block = []
    for line in lines[start:]:
        if not line.startswith("  # "):
            break
        block.append("  " + line[len("  # ") :])
    assert len(block) >= 3
    enabled = tmp_path / "sweep.yaml"
    enabled.write_text(text + "\n" + "\n".join(block) + "\n", encoding="utf-8")
    settings = load_settings([*CONFIGS, enabled], env={})
    space = {sp.key: sp for sp in search_space(settings)}
    assert set(space) == set(settings.sweep.space) and len(space) == len(block) - 1
    study = optuna.create_study(sampler=make_sampler(settings, list(space.values())))
    trial_settings(settings, suggest(study.ask(), list(space.values())))
