"""The sweep's search space, its sampler and pruner, and timing-free pruning decisions.

A sweep trial is a variant of the validated settings: a few dotted keys (``composer.lookback``,
``composer.strategies[0].params.fast``) set to values Optuna draws. The space is ``sweep.space`` when given,
else every tunable parameter every composer strategy declares (:class:`trader.strategies.Param`: bounds,
step, log scale, ``above`` constraints). Optuna's parameter name is the dotted key itself, so a trial's
``params`` can be fed straight back to :func:`trial_settings`.

Conventions the driver relies on:

* Objectives: ``sweep.objectives`` are maximised except ``max_drawdown`` (a positive fraction, minimised).
* Pruning steps count folds: report a trial's running score over its first ``k`` folds as step ``k``
  (k >= 1). No trial is pruned before it has run ``sweep.pruner_warmup_folds`` folds (a step below that),
  nor while fewer than ``sweep.pruner_startup_trials`` trials are COMPLETE.
* Determinism: the sampler is seeded (``sweep.seed``, else ``engine.rng_seed``); pruning is decided by
  :func:`prune_decision` against a fixed list of finished trials (those finished before the trial was
  asked), never against whatever happens to be running, so it does not depend on timing.

Example::

    import optuna
    from trader.config import load_settings
    from trader.sweep.space import (directions, make_pruner, make_sampler, search_space, suggest,
                                    trial_settings)

    settings = load_settings(["configs/base.yaml", "configs/demo.yaml"], env={})
    space = search_space(settings)
    study = optuna.create_study(directions=directions(settings), sampler=make_sampler(settings, space),
                                pruner=make_pruner(settings))
    trial = study.ask()
    variant = trial_settings(settings, suggest(trial, space))   # a validated Settings
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.util
import math
import re
import types
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import optuna
from optuna.pruners import BasePruner, MedianPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, SecretStr

from trader.config import Settings, SweepParam, dotted_key, parse_key_path, with_overrides
from trader.errors import ConfigError, DataError
from trader.strategies import Param, get_strategy

__all__ = [
    "MAX_GRID_POINTS",
    "SHA_REDUCTION_FACTOR",
    "InfeasibleParams",
    "SearchParam",
    "StudyView",
    "directions",
    "grid_values",
    "make_pruner",
    "make_sampler",
    "objective_values",
    "parse_key",
    "prune_decision",
    "search_space",
    "suggest",
    "trial_settings",
]

#: Most points a grid sweep may enumerate (the product over every swept key).
MAX_GRID_POINTS = 1_000_000
#: Successive halving keeps the best 1/3 at each rung; rungs at steps w, 3w, 9w (w = warm-up folds, >= 1).
#: Optuna's default of 4 leaves too few rungs for the handful of folds a walk-forward run has.
SHA_REDUCTION_FACTOR = 3

_STRATEGY_KEY = re.compile(r"^composer\.strategies\[(\d+)\]\.params\.([A-Za-z_][A-Za-z0-9_]*)$")
_EPS = 1e-9  # tolerance (in steps) when placing a value on a step grid


class InfeasibleParams(ConfigError, optuna.TrialPruned):
    """A drawn point breaks an ``above`` constraint (only grid points and enqueued trials can).

    Nothing can be evaluated for it. It is a :class:`~trader.errors.ConfigError` (a driver that fails
    trials with invalid settings fails it; a grid counts a failed point as visited) and an
    :class:`optuna.TrialPruned` (a driver may tell it PRUNED instead).
    """


@dataclass(frozen=True)
class SearchParam:
    """One swept setting.

    ``key``: dotted settings key (``composer.strategies[0].params.fast``), also Optuna's parameter name.
    ``kind``: ``"int"``, ``"float"`` or ``"categorical"``. ``low``/``high``: inclusive bounds in the
    setting's own units (``high`` already snapped onto the ``step`` grid anchored at ``low``); ``step``: grid
    step (ints: >= 1) or None (continuous float); ``log``: sample on a log scale; ``choices``: the values of
    a categorical. ``above``: key of another SearchParam this one must exceed (drawn after it, from above its
    value). ``grid``: the points a grid sweep uses; empty = every step point (or every choice).
    """

    key: str
    kind: Literal["int", "float", "categorical"]
    low: float | None
    high: float | None
    step: float | None
    log: bool
    choices: tuple[Any, ...]
    above: str | None = None
    grid: tuple[Any, ...] = ()


# -- keys -------------------------------------------------------------------------------------------------


def parse_key(key: str) -> tuple[str | int, ...]:
    """``"composer.strategies[0].params.fast"`` -> ``("composer", "strategies", 0, "params", "fast")``.

    The same dotted syntax as ``--set`` and :func:`trader.config.with_overrides`; ConfigError otherwise.

    >>> parse_key("composer.strategies[1].params.period")
    ('composer', 'strategies', 1, 'params', 'period')
    """
    try:
        parts = parse_key_path(key, "sweep")
    except ConfigError:
        parts = ()
    if not parts or any(isinstance(p, int) and p < 0 for p in parts):
        raise ConfigError(f"sweep key {key!r} is not a dotted settings key such as composer.lookback")
    return parts


_dotted = dotted_key


@dataclass(frozen=True)
class _Target:
    """What a key points at: its declared kind, Literal choices, and the strategy Param when it is one."""

    declared: str | None  # "int" | "float" | "bool" | "str" | "literal" | None (not declared: free mapping)
    literal: tuple[Any, ...] = ()
    param: Param | None = None


def _declared_kind(tp: Any) -> tuple[str | None, tuple[Any, ...]]:
    """The kind of a field annotation: Annotated and Optional stripped."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return None, ()
            tp = args[0]
        else:
            break
    if typing.get_origin(tp) is Literal:
        return "literal", typing.get_args(tp)
    for py, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (SecretStr, "secret")):
        if tp is py:
            return name, ()
    return None, ()


def _kind_of_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str" if isinstance(value, str) else None


def _unknown(key: str, where: str, detail: str) -> ConfigError:
    return ConfigError(f"sweep.space: unknown key {key} ({where}: {detail})")


def _resolve(settings: Settings, key: str) -> _Target:
    """What ``key`` names in ``settings``; ConfigError naming the key when it names nothing sweepable."""
    path = parse_key(key)
    m = _STRATEGY_KEY.match(key)
    if m is not None:
        i, name = int(m.group(1)), m.group(2)
        strategies = settings.composer.strategies
        if i >= len(strategies):
            raise _unknown(
                key, f"composer.strategies[{i}]", f"composer.strategies has {len(strategies)} entries"
            )
        sdef = get_strategy(strategies[i].name)
        by_name = {p.name: p for p in sdef.params}
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise _unknown(key, f"strategy {sdef.name}", f"{hint}params: {', '.join(by_name)}")
        return _Target(by_name[name].kind, by_name[name].choices, by_name[name])
    node: Any = settings
    declared: Any = None
    for depth, part in enumerate(path):
        where = _dotted(path[: depth + 1])
        if isinstance(node, BaseModel):
            fields = type(node).model_fields
            if not isinstance(part, str) or part not in fields:
                close = difflib.get_close_matches(str(part), list(fields), n=1, cutoff=0.6)
                hint = f"did you mean {_dotted((*path[:depth], close[0]))}?" if close else "no such setting"
                raise _unknown(key, where, hint)
            declared = fields[part].annotation
            node = getattr(node, part)
        elif isinstance(node, list | tuple):
            if not isinstance(part, int) or part >= len(node):
                raise _unknown(key, where, f"the list has {len(node)} entries")
            declared, node = None, node[part]
        elif isinstance(node, dict):
            if part not in node:
                raise _unknown(key, where, "not in the mapping")
            declared, node = None, node[part]
        else:
            raise _unknown(key, where, f"{_dotted(path[:depth])} is a value, not a section")
    if isinstance(node, BaseModel | dict | list | tuple):
        raise ConfigError(f"sweep.space: {key} is a section or a list; sweep one value inside it")
    kind, literal = _declared_kind(declared) if declared is not None else (None, ())
    return _Target(kind or _kind_of_value(node), literal)


# -- the space ----------------------------------------------------------------------------------------------


def _is_whole(x: float | None) -> bool:
    return x is None or float(x).is_integer()


def _snap_high(low: float, high: float, step: float | None, kind: str) -> float:
    """``high`` moved down onto the step grid anchored at ``low`` (Optuna would warn and do the same)."""
    if step is None:
        return high
    if kind == "int":
        return int(low) + (int(high) - int(low)) // int(step) * int(step)
    return round(low + math.floor((high - low) / step + _EPS) * step, 12)


_OPTUNA_CHOICE = (type(None), bool, int, float, str)


def _from_sweep_param(settings: Settings, key: str, sp: SweepParam) -> SearchParam:
    target = _resolve(settings, key)
    where = f"sweep.space: {key}"
    param = target.param
    if sp.choices is not None:
        if sp.type not in (None, "categorical"):
            raise ConfigError(f"{where}: type {sp.type} with choices; use type: categorical or low/high")
        for c in sp.choices:
            if not isinstance(c, _OPTUNA_CHOICE):
                raise ConfigError(f"{where}: choice {c!r} must be a number, text, true/false or null")
        if param is not None:
            choices = tuple(param.check(c, f"sweep.space {key}") for c in sp.choices)
        else:
            choices = tuple(sp.choices)
        return SearchParam(key, "categorical", None, None, None, False, choices)
    assert sp.low is not None and sp.high is not None  # SweepParam validates: choices or low/high
    declared = target.declared
    if sp.type == "categorical":
        raise ConfigError(f"{where}: type categorical needs choices")
    if declared in ("bool", "str", "literal", "secret", "categorical"):
        allowed = f" (allowed: {', '.join(map(repr, target.literal))})" if target.literal else ""
        raise ConfigError(f"{where}: {key} is not a number; sweep it with choices: [...]{allowed}")
    if sp.type is not None:
        kind = sp.type
    elif declared in ("int", "float"):
        kind = declared
    else:
        kind = "int" if _is_whole(sp.low) and _is_whole(sp.high) and _is_whole(sp.step) else "float"
    if kind == "float" and declared == "int":
        raise ConfigError(f"{where}: {key} takes whole numbers; use type: int (or leave type out)")
    if kind == "int" and not (_is_whole(sp.low) and _is_whole(sp.high) and _is_whole(sp.step)):
        raise ConfigError(f"{where}: an int range needs whole low, high and step (got {sp.low}..{sp.high})")
    low: float = int(sp.low) if kind == "int" else float(sp.low)
    high: float = int(sp.high) if kind == "int" else float(sp.high)
    step: float | None = int(sp.step or 1) if kind == "int" else sp.step
    if param is not None:
        assert param.low is not None and param.high is not None
        if sp.step is None and not sp.log and param.step is not None:
            step = int(param.step) if kind == "int" else float(param.step)  # the strategy's own grain
        if not param.low <= low <= high <= param.high:
            raise ConfigError(
                f"{where}: range {low}..{high} leaves the strategy's bounds "
                f"{param.low}..{param.high}{' ' + param.doc if param.doc else ''}"
            )
    high = _snap_high(low, high, step, kind)
    return SearchParam(key, kind, low, high, step, sp.log, ())


def _from_param(key: str, p: Param, grid_points: int) -> SearchParam:
    if p.kind == "categorical":
        return SearchParam(key, "categorical", None, None, None, False, tuple(p.choices))
    assert p.low is not None and p.high is not None
    step = p.step if p.step is not None else None
    high = _snap_high(p.low, p.high, step, p.kind)
    return SearchParam(key, p.kind, p.low, high, step, p.log, (), grid=tuple(p.grid_values(grid_points)))


def _lowest_above(sp: SearchParam, floor: float) -> float:
    """The smallest value of ``sp``'s grid (anchored at low) strictly above ``floor`` (may exceed high)."""
    assert sp.low is not None
    if sp.kind == "int":
        step = int(sp.step or 1)
        k = max(0, math.floor((floor - sp.low) / step) + 1)
        return int(sp.low) + k * step
    if sp.step:
        k = max(0, math.floor((floor - sp.low) / sp.step + _EPS) + 1)
        return round(sp.low + k * sp.step, 12)
    return max(float(sp.low), float(np.nextafter(float(floor), np.inf)))


def _highest_below(sp: SearchParam, ceiling: float) -> float:
    """The largest value of ``sp``'s grid (anchored at low) strictly below ``ceiling`` (may be below low)."""
    assert sp.low is not None and sp.high is not None
    if sp.kind == "int":
        step = int(sp.step or 1)
        k = math.ceil((ceiling - sp.low) / step) - 1
        return min(int(sp.high), int(sp.low) + k * step)
    if sp.step:
        k = math.ceil((ceiling - sp.low) / sp.step - _EPS) - 1
        return min(float(sp.high), round(sp.low + k * sp.step, 12))
    return min(float(sp.high), float(np.nextafter(float(ceiling), -np.inf)))


def _clamp(sp: SearchParam, low: float | None = None, high: float | None = None) -> SearchParam:
    """``sp`` narrowed to [low, high]; ConfigError when nothing is left."""
    if sp.kind == "categorical":
        kept = tuple(
            c
            for c in sp.choices
            if (low is None or c >= low) and (high is None or c <= high)  # numeric choices of a numeric Param
        )
        if not kept:
            raise ConfigError(f"sweep.space: no choice of {sp.key} fits between {low} and {high}")
        return dataclasses.replace(sp, choices=kept)
    assert sp.low is not None and sp.high is not None
    new_low = sp.low if low is None else max(sp.low, low)
    new_high = sp.high if high is None else min(sp.high, high)
    if new_low > new_high:
        raise ConfigError(
            f"sweep.space: {sp.key} has no room left between {new_low} and {new_high} (its range is "
            f"{sp.low}..{sp.high}); widen it or move the setting it must stay above or below"
        )
    grid = tuple(v for v in sp.grid if new_low <= v <= new_high)
    if sp.grid and not grid:
        grid = (new_low,)
    snapped_high = _snap_high(new_low, new_high, sp.step, sp.kind)
    return dataclasses.replace(sp, low=new_low, high=snapped_high, grid=grid)


def _link_constraints(settings: Settings, space: list[SearchParam]) -> list[SearchParam]:
    """Apply every strategy's ``above`` constraints: link two swept keys, or clamp against a fixed value."""
    by_key = {sp.key: sp for sp in space}
    for i, entry in enumerate(settings.composer.strategies):
        sdef = get_strategy(entry.name)
        fixed = sdef.validate(entry.params)
        for p in sdef.params:
            if p.above is None:
                continue
            pk = f"composer.strategies[{i}].params.{p.name}"
            qk = f"composer.strategies[{i}].params.{p.above}"
            upper, lower = by_key.get(pk), by_key.get(qk)
            if upper is not None and lower is not None:
                if upper.kind != "categorical" and lower.kind != "categorical":
                    assert upper.high is not None and lower.low is not None
                    if upper.high <= lower.low:
                        raise ConfigError(
                            f"sweep.space: {pk} (up to {upper.high}) can never exceed {qk} (from {lower.low})"
                        )
                    # Keep the lower key below the upper one's highest value, so every draw has room.
                    by_key[qk] = _clamp(lower, high=_highest_below(lower, upper.high))
                by_key[pk] = dataclasses.replace(by_key[pk], above=qk)
            elif upper is not None:
                floor = fixed[p.above]
                if upper.kind == "categorical":
                    by_key[pk] = _clamp(upper, low=float(np.nextafter(float(floor), np.inf)))
                else:
                    by_key[pk] = _clamp(upper, low=_lowest_above(upper, floor))
            elif lower is not None:
                ceiling = fixed[p.name]
                if lower.kind == "categorical":
                    by_key[qk] = _clamp(lower, high=float(np.nextafter(float(ceiling), -np.inf)))
                else:
                    by_key[qk] = _clamp(lower, high=_highest_below(lower, ceiling))
    ordered = [by_key[sp.key] for sp in space]
    # A key drawn from above another must come after it.
    out: list[SearchParam] = []
    placed: set[str] = set()
    pending = list(ordered)
    while pending:
        progressed = False
        for sp in list(pending):
            if sp.above is None or sp.above in placed:
                out.append(sp)
                placed.add(sp.key)
                pending.remove(sp)
                progressed = True
        if not progressed:  # pragma: no cover - Param declarations cannot form a cycle
            raise ConfigError("sweep.space: circular 'above' constraints")
    return out


def _check_endpoints(settings: Settings, sp: SearchParam) -> None:
    """Each end of a range (every choice) must validate with the other settings as configured."""
    values = sp.choices if sp.kind == "categorical" else (sp.low, sp.high)
    for value in values:
        with_overrides(settings, {sp.key: value}, source="sweep.space")


def search_space(settings: Settings) -> list[SearchParam]:
    """The swept settings: ``sweep.space`` when given, else every tunable strategy parameter.

    With ``sweep.space`` given, every key must name an existing setting (a ConfigError names the key) and
    every range end or choice must validate; strategy parameters must stay within the strategy's declared
    bounds and take the strategy's step when the range gives none. When it is empty: every tunable
    :class:`~trader.strategies.Param` of every composer strategy, as ``composer.strategies[i].params.<name>``,
    with the Param's bounds, step, log scale and ``above``; a grid sweep uses
    ``walkforward.grid_points_per_param`` points of each (``Param.grid_values``).

    A strategy parameter declared ``above`` another is linked to it when both are swept (drawn from above
    the other's value), and clamped above (or below) the other's configured value when only one is.
    Order: ``sweep.space`` order (or strategies, then declaration order), a key after the one it is above.

    >>> from trader.config import load_settings
    >>> [p.key for p in search_space(load_settings(["configs/demo.yaml"], env={}))][:2]
    ['composer.strategies[0].params.fast', 'composer.strategies[0].params.slow']
    """
    space: list[SearchParam] = []
    if settings.sweep.space:
        for key, sp in settings.sweep.space.items():
            space.append(_from_sweep_param(settings, key, sp))
    else:
        n = settings.walkforward.grid_points_per_param
        for i, entry in enumerate(settings.composer.strategies):
            for p in get_strategy(entry.name).params:
                if p.tunable:
                    space.append(_from_param(f"composer.strategies[{i}].params.{p.name}", p, n))
        if not space:
            raise ConfigError(
                "nothing to sweep: sweep.space is empty and composer.strategies declares no tunable "
                "parameter; add strategies or give sweep.space"
            )
    space = _link_constraints(settings, space)
    for sp in space:
        if _STRATEGY_KEY.match(sp.key) is None:
            _check_endpoints(settings, sp)
    return space


# -- drawing ------------------------------------------------------------------------------------------------


def _draw(trial: Any, sp: SearchParam, low: float, high: float) -> Any:
    if sp.kind == "int":
        return trial.suggest_int(sp.key, int(low), int(high), step=int(sp.step or 1), log=sp.log)
    return trial.suggest_float(sp.key, float(low), float(high), step=sp.step, log=sp.log)


def suggest(trial: Any, space: Sequence[SearchParam]) -> dict[str, Any]:
    """Draw ``{key: value}`` for one trial with ``trial.suggest_int/float/categorical`` (name = the key).

    A key with ``above`` is drawn from the values of its own grid strictly above the other key's value, as
    :meth:`trader.strategies.StrategyDef.suggest` does. Under a :class:`~optuna.samplers.GridSampler` the
    full range is offered instead (the grid fixes the value anyway) and a grid point that breaks a
    constraint raises :class:`InfeasibleParams` (a :class:`optuna.TrialPruned`).

    >>> import optuna
    >>> from trader.config import load_settings
    >>> settings = load_settings(["configs/demo.yaml"], env={})
    >>> space = search_space(settings)
    >>> params = suggest(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask(), space)
    >>> params["composer.strategies[0].params.slow"] > params["composer.strategies[0].params.fast"]
    True
    """
    grid = isinstance(getattr(getattr(trial, "study", None), "sampler", None), GridSampler)
    values: dict[str, Any] = {}
    for sp in space:
        if sp.kind == "categorical":
            values[sp.key] = trial.suggest_categorical(sp.key, list(sp.choices))
            continue
        assert sp.low is not None and sp.high is not None
        low = sp.low
        if sp.above is not None and not grid and not isinstance(values[sp.above], bool | str | None):
            low = max(sp.low, _lowest_above(sp, values[sp.above]))
            if low > sp.high:
                raise InfeasibleParams(
                    f"no room for {sp.key} (up to {sp.high}) above {sp.above}={values[sp.above]}"
                )
        values[sp.key] = _draw(trial, sp, low, sp.high)
    for sp in space:
        if sp.above is not None and not values[sp.key] > values[sp.above]:
            raise InfeasibleParams(
                f"{sp.key}={values[sp.key]} must exceed {sp.above}={values[sp.above]} (grid point left out)"
            )
    return values


def _plain(value: Any) -> Any:
    """numpy scalars as Python values (settings validation and YAML want plain types)."""
    return value.item() if isinstance(value, np.generic) else value


def trial_settings(settings: Settings, params: Mapping[str, Any]) -> Settings:
    """A validated copy of ``settings`` with a trial's ``{dotted key: value}`` applied.

    Strategy parameters are checked against each strategy's declaration as well (the settings model keeps
    them as a free mapping). Raises ConfigError naming the trial's key and value.

    >>> from trader.config import load_settings
    >>> s = load_settings(["configs/demo.yaml"], env={})
    >>> trial_settings(s, {"composer.lookback": 30}).composer.lookback
    30
    """
    clean = {str(k): _plain(v) for k, v in params.items()}
    out = with_overrides(settings, clean, source="sweep trial")
    for i, entry in enumerate(out.composer.strategies):
        try:
            get_strategy(entry.name).validate(entry.params)
        except ConfigError as exc:
            raise ConfigError(f"sweep trial composer.strategies[{i}]: {exc}") from None
    return out


# -- sampler, pruner, objectives --------------------------------------------------------------------------


def _seed(settings: Settings) -> int:
    return settings.sweep.seed if settings.sweep.seed is not None else settings.engine.rng_seed


def grid_values(sp: SearchParam) -> list[Any]:
    """The points a grid sweep takes for ``sp``: its ``grid``, every choice, or every step point.

    ConfigError for a continuous float (no step) or a log-scale float without grid points.

    >>> grid_values(SearchParam("composer.lookback", "int", 10, 30, 10, False, ()))
    [10, 20, 30]
    """
    if sp.grid:
        return list(sp.grid)
    if sp.kind == "categorical":
        return list(sp.choices)
    assert sp.low is not None and sp.high is not None
    if sp.kind == "float" and (sp.step is None or sp.log):
        raise ConfigError(
            f"sweep.sampler=grid: {sp.key} is a continuous float; give it a step (or choices) in sweep.space"
        )
    step = sp.step or 1
    n = math.floor((sp.high - sp.low) / step + _EPS) + 1
    if sp.kind == "int":
        return [int(sp.low) + k * int(step) for k in range(n)]
    return [round(sp.low + k * step, 12) for k in range(n)]


class _AskTellGridSampler(GridSampler):
    """GridSampler for ask-and-tell drivers: it does not call ``study.stop()`` when the grid is done.

    Optuna's GridSampler stops the study from ``after_trial`` once every point was visited, which raises
    RuntimeError outside ``study.optimize``; the driver asks :meth:`is_exhausted` instead.
    """

    def after_trial(self, study: Any, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        return None


def make_sampler(settings: Settings, space: Sequence[SearchParam]) -> BaseSampler:
    """The Optuna sampler ``sweep.sampler`` names, seeded with ``sweep.seed`` (else ``engine.rng_seed``).

    * ``tpe``: ``TPESampler(multivariate=True, constant_liar=True)``. Multivariate TPE models the swept keys
      jointly (fast and slow interact); keys whose range moves with an ``above`` constraint fall back to
      univariate TPE (silently). The constant liar counts running trials as bad, so trials asked while others
      run spread out; the draw stays deterministic when the driver asks trial n at a fixed point (after
      telling trial n - concurrency). With two objectives this is multi-objective TPE (MOTPE).
    * ``random``: ``RandomSampler``.
    * ``grid``: ``GridSampler`` over :func:`grid_values` of every key (product <= :data:`MAX_GRID_POINTS`;
      visited in a seeded shuffled order, so ``n_trials`` below the grid size runs a random subset). It
      never stops the study itself (Optuna's would raise under ask-and-tell): stop asking when
      ``sampler.is_exhausted(study)``; a trial asked after that repeats a visited point.
    * ``cmaes``: ``CmaEsSampler`` (needs the ``cmaes`` package); single objective only. Categorical keys
      and keys with a moving range are drawn by its independent (random) sampler.

    Raises ConfigError for cmaes with two objectives, a grid over a continuous float, or a grid too large.

    >>> from trader.config import load_settings
    >>> s = load_settings(["configs/demo.yaml"], env={})
    >>> type(make_sampler(s, search_space(s))).__name__
    'TPESampler'
    """
    seed = _seed(settings)
    name = settings.sweep.sampler
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "random":
        return RandomSampler(seed=seed)
    if name == "grid":
        axes = {sp.key: grid_values(sp) for sp in space}
        size = math.prod(len(v) for v in axes.values())
        if size > MAX_GRID_POINTS:
            raise ConfigError(
                f"sweep.sampler=grid: {size:,} grid points exceed {MAX_GRID_POINTS:,}; coarsen the steps "
                "(or walkforward.grid_points_per_param) or use sampler tpe"
            )
        return _AskTellGridSampler(axes, seed=seed)
    if name == "cmaes":
        if len(settings.sweep.objectives) > 1:
            raise ConfigError(
                f"sweep.sampler=cmaes optimises one objective, but sweep.objectives has "
                f"{len(settings.sweep.objectives)} ({', '.join(settings.sweep.objectives)}); use sampler tpe"
            )
        if importlib.util.find_spec("cmaes") is None:
            raise ConfigError(
                "sweep.sampler=cmaes needs the 'cmaes' package, which is not installed; "
                "install it (pip install cmaes) or use sampler tpe"
            )
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ConfigError(f"sweep.sampler {name!r} is not one of tpe, random, grid, cmaes")  # pragma: no cover


class _StartupGate(BasePruner):
    """Never prune while fewer than ``n_startup_trials`` trials are COMPLETE; otherwise as ``inner``.

    ``inner`` is always asked, so that successive halving records each trial's rung values (later trials
    compete against them) even while its verdict is ignored.
    """

    def __init__(self, inner: BasePruner, n_startup_trials: int) -> None:
        self.inner = inner
        self.n_startup_trials = n_startup_trials

    def prune(self, study: Any, trial: FrozenTrial) -> bool:
        verdict = self.inner.prune(study, trial)
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return bool(verdict) and len(completed) >= self.n_startup_trials


def make_pruner(settings: Settings) -> BasePruner:
    """The Optuna pruner ``sweep.pruner`` names; a step is the number of folds a running score covers.

    * ``median``: ``MedianPruner(n_startup_trials=sweep.pruner_startup_trials,
      n_warmup_steps=sweep.pruner_warmup_folds)``: prune when the trial's best running score so far is below
      the median of the completed trials' scores at the same step.
    * ``successive_halving``: ``SuccessiveHalvingPruner(min_resource=max(1, pruner_warmup_folds),
      reduction_factor=3)``: rungs at steps w, 3w, 9w, ... (w = min_resource; a fixed one, since 'auto' would
      depend on which trials happen to be done), not pruning until ``pruner_startup_trials`` trials are
      complete.
    * ``none``: ``NopPruner``.

    Multi-objective studies cannot prune in Optuna (``Trial.should_prune`` refuses): NopPruner then.

    >>> from trader.config import load_settings
    >>> type(make_pruner(load_settings([], env={}))).__name__
    'MedianPruner'
    """
    sweep = settings.sweep
    if len(sweep.objectives) > 1 or sweep.pruner == "none":
        return NopPruner()
    if sweep.pruner == "median":
        return MedianPruner(
            n_startup_trials=sweep.pruner_startup_trials, n_warmup_steps=sweep.pruner_warmup_folds
        )
    inner = SuccessiveHalvingPruner(
        min_resource=max(1, sweep.pruner_warmup_folds),
        reduction_factor=SHA_REDUCTION_FACTOR,
        min_early_stopping_rate=0,
    )
    return _StartupGate(inner, sweep.pruner_startup_trials)


def directions(settings: Settings) -> list[str]:
    """``"maximize"`` or ``"minimize"`` per objective (``max_drawdown`` is minimised).

    >>> from trader.config import load_settings
    >>> directions(load_settings([], ["sweep.objectives=[sharpe, max_drawdown]"], env={}))
    ['maximize', 'minimize']
    """
    return ["minimize" if o == "max_drawdown" else "maximize" for o in settings.sweep.objectives]


def objective_values(metrics: Mapping[str, Any], settings: Settings) -> list[float]:
    """The values to tell Optuna, one per ``sweep.objectives`` entry, from a trial's metrics.

    ``metrics``: a :func:`trader.metrics.summarize`-style dict (annualised ``sharpe``/``sortino``, ``cagr``
    and ``total_return`` as fractions, ``max_drawdown`` a positive fraction) plus ``score`` (the composite).
    An undefined metric (NaN or None, e.g. the Sharpe ratio of a configuration that never traded) becomes the
    worst value (-inf when maximised, +inf when minimised): Optuna would fail a NaN trial, and a failed trial
    is re-run instead of being learned from. DataError when a metric is missing.

    >>> from trader.config import load_settings
    >>> objective_values({"score": 1.5}, load_settings([], env={}))
    [1.5]
    """
    out: list[float] = []
    for name, direction in zip(settings.sweep.objectives, directions(settings), strict=True):
        if name not in metrics:
            raise DataError(f"trial metrics lack the objective {name!r} (have: {', '.join(sorted(metrics))})")
        value = metrics[name]
        value = math.nan if value is None else float(value)
        if math.isnan(value):
            value = -math.inf if direction == "maximize" else math.inf
        out.append(value)
    return out


# -- timing-free pruning ------------------------------------------------------------------------------------


class _Recorder:
    """The part of a storage a pruner writes to: successive halving's ``completed_rung_<k>`` system attrs."""

    def __init__(self, trial: FrozenTrial, sink: Callable[[str, Any], None] | None) -> None:
        self._trial = trial
        self._sink = sink
        self.recorded: dict[str, Any] = {}

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._trial.system_attrs[key] = value
        self.recorded[key] = value
        if self._sink is not None:
            self._sink(key, value)


class StudyView:
    """A read-only stand-in for :class:`optuna.Study`, as a pruner sees it, over a fixed list of trials.

    Exposes what Optuna's median/percentile and successive-halving pruners read: ``get_trials(deepcopy,
    states)``, ``trials``, ``direction``, ``directions``, and ``_storage.set_trial_system_attr`` (recorded,
    see :func:`prune_decision`). ``trials`` should be the trials finished before the judged trial was asked
    (plus, optionally, the judged trial itself); what else happens to be running is left out on purpose.
    """

    def __init__(
        self,
        trials: Sequence[FrozenTrial],
        directions: Sequence[str | StudyDirection],
        storage: _Recorder | None = None,
    ) -> None:
        self._trials = list(trials)
        self.directions = [
            d if isinstance(d, StudyDirection) else StudyDirection[str(d).upper()] for d in directions
        ]
        self._storage = storage

    @property
    def direction(self) -> StudyDirection:
        if len(self.directions) > 1:
            raise RuntimeError("a multi-objective study has no single direction; use directions")
        return self.directions[0]

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        out = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(out) if deepcopy else out


def _frozen_copy(trial: FrozenTrial, step: int, value: float) -> FrozenTrial:
    out = copy.copy(trial)
    out.intermediate_values = {**trial.intermediate_values, int(step): float(value)}
    out.system_attrs = dict(trial.system_attrs)
    return out


def prune_decision(
    pruner: BasePruner,
    finished_trials: Sequence[FrozenTrial],
    trial: FrozenTrial | optuna.trial.Trial,
    step: int,
    value: float,
    *,
    directions: Sequence[str | StudyDirection] | None = None,
    set_system_attr: Callable[[str, Any], None] | None = None,
) -> bool:
    """Whether ``pruner`` prunes ``trial`` after its running score ``value`` at ``step``, judged only against
    ``finished_trials`` (e.g. those finished before the trial was asked), so the answer does not depend on
    which other trials happen to be running or finished meanwhile.

    ``trial``: the running trial's :class:`~optuna.trial.FrozenTrial` as stored (its earlier folds'
    intermediate values and its system attrs), or the live :class:`optuna.trial.Trial` (then read from its
    storage, and ``directions`` default to its study's). ``value`` is added as step ``step`` (whether or not
    it was already reported). Successive halving records the trial's score at each rung it passes as a
    system attr (``completed_rung_<k>``); later trials compete against it. Those writes go to
    ``set_system_attr(key, value)`` - by default, for a live trial, to the trial in its storage; for a
    FrozenTrial they also land in a copy only, so persist them yourself (``study._storage
    .set_trial_system_attr(trial._trial_id, key, value)``). With several objectives: False (Optuna cannot
    prune those).

    The result equals ``pruner.prune(study, trial)`` on a study whose other trials are exactly
    ``finished_trials`` (tested against Optuna's own pruners for median and successive halving).

    Example::

        asked_after = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        trial = study.ask()
        ...                                       # 2 folds done, running score 0.8
        trial.report(0.8, 2)
        if prune_decision(study.pruner, asked_after, trial, 2, 0.8):
            study.tell(trial, state=TrialState.PRUNED)
    """
    if isinstance(trial, optuna.trial.Trial):
        live = trial
        frozen = live.study._storage.get_trial(live._trial_id)
        if directions is None:
            directions = live.study.directions
        if set_system_attr is None:

            def set_system_attr(key: str, v: Any) -> None:
                live.study._storage.set_trial_system_attr(live._trial_id, key, v)

    else:
        frozen = trial
        if directions is None:
            raise ValueError("prune_decision needs directions when given a FrozenTrial")
    if len(directions) > 1 or isinstance(pruner, NopPruner):
        return False
    judged = _frozen_copy(frozen, step, value)
    recorder = _Recorder(judged, set_system_attr)
    # The judged trial may be in the list (asked before the list was taken); trials built with
    # optuna.trial.create_trial all have number -1 and are kept.
    others = [t for t in finished_trials if judged.number < 0 or t.number != judged.number]
    view = StudyView(others, directions, recorder)
    return bool(pruner.prune(view, judged))  # type: ignore[arg-type]  # duck-typed Study
