"""Strategy plumbing: parameter declarations, the registry, bar inputs and the position latch.

A strategy maps one symbol's bars and its parameters to a *target weight* per bar: a float in [-1, 1]
(1 = fully long, -1 = fully short, 0 = flat), decided at that bar's close from rows <= t only; the order it
implies fills no earlier than the next bar's open. During warm-up the target is 0; afterwards it is never NaN.
On a bar with a missing input (NaN close, say) a rule comparing indicators is flat and a rule that latches
entries and exits keeps its position; the composer decides what a NaN bar means for the blended target.

Parameters are declared as data (:class:`Param`), so one declaration gives defaults, validation, an Optuna
search space (:meth:`StrategyDef.suggest`) and a grid (:meth:`StrategyDef.grid`).

Adding a strategy::

    import numpy as np
    from trader.strategies import Param, get_strategy, register_strategy

    @register_strategy(
        "close_above_open",
        params=[Param("min_gap", "float", 0.0, 0.0, 0.05, doc="fraction of open")],
        inputs=("open", "close"),
        style="trend",
    )
    def close_above_open(bars, *, min_gap):
        # long after any bar that closes min_gap above its open, else flat
        return (bars.close > bars.open * (1.0 + min_gap)).astype(np.float64)

    w = get_strategy("close_above_open").run({"open": [10.0, 10.0], "close": [10.5, 9.8]}, min_gap=0.01)
    # w == [1.0, 0.0]
"""

from __future__ import annotations

import difflib
import itertools
import math
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from numba import njit

from trader.errors import ConfigError, DataError

__all__ = [
    "COLUMNS",
    "STRATEGIES",
    "STYLES",
    "BarArrays",
    "Param",
    "StrategyDef",
    "as_bar_arrays",
    "get_strategy",
    "latch_positions",
    "register_strategy",
    "strategy_names",
    "unregister_strategy",
]

ParamKind = Literal["int", "float", "categorical"]
Style = Literal["trend", "mean_reversion", "other"]
STYLES: tuple[str, ...] = ("trend", "mean_reversion", "other")
COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
_KINDS = ("int", "float", "categorical")


# -- parameters -------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _same_choice(value: Any, choice: Any) -> bool:
    # True == 1 in Python; a categorical of (False, True) must not accept 1.
    if isinstance(choice, bool | np.bool_) or isinstance(value, bool | np.bool_):
        return isinstance(value, bool | np.bool_) and isinstance(choice, bool | np.bool_) and value == choice
    return type(value) is type(choice) and value == choice


@dataclass(frozen=True)
class Param:
    """One strategy parameter: type, default, bounds and search space, declared as data.

    ``kind`` is ``"int"`` (bars, counts), ``"float"`` (thresholds, multipliers) or ``"categorical"`` (any
    of ``choices``, e.g. ``(False, True)``). ``low``/``high`` bound int and float values (inclusive);
    ``step`` is the search-space grain (ints default to 1) and ``log`` samples on a log scale (not with a
    float ``step``). ``above`` names another parameter this one must exceed (``slow`` above ``fast``): it is
    validated and the search space draws this one from above the other's drawn value. ``tunable=False``
    keeps the parameter out of searches (its default, or a value given in ``fixed``, is used). ``doc``
    gives the unit.

    Example::

        fast = Param("fast", "int", 10, 2, 100, doc="bars")
        slow = Param("slow", "int", 50, 5, 400, above="fast", doc="bars")
    """

    name: str
    kind: ParamKind
    default: Any
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    above: str | None = None
    tunable: bool = True
    doc: str = ""

    def __post_init__(self) -> None:
        where = f"param {self.name!r}"
        if not self.name.isidentifier():
            raise ConfigError(f"{where}: the name must be a Python identifier")
        if self.kind not in _KINDS:
            raise ConfigError(f"{where}: kind {self.kind!r} is not one of {', '.join(_KINDS)}")
        if self.kind == "categorical":
            if not self.choices:
                raise ConfigError(f"{where}: a categorical parameter needs choices")
            object.__setattr__(self, "choices", tuple(self.choices))
            if not any(_same_choice(self.default, c) for c in self.choices):
                raise ConfigError(f"{where}: default {self.default!r} is not one of {self.choices!r}")
            return
        if self.low is None or self.high is None or not (_is_number(self.low) and _is_number(self.high)):
            raise ConfigError(f"{where}: a numeric parameter needs numeric low and high bounds")
        if not self.low <= self.high:
            raise ConfigError(f"{where}: low {self.low} exceeds high {self.high}")
        if self.log and self.low <= 0:
            raise ConfigError(f"{where}: a log-scale parameter needs low > 0, got {self.low}")
        if self.kind == "int":
            if self.low != int(self.low) or self.high != int(self.high):
                raise ConfigError(f"{where}: int bounds must be whole numbers")
            object.__setattr__(self, "low", int(self.low))
            object.__setattr__(self, "high", int(self.high))
            object.__setattr__(self, "step", int(self.step or 1))
            if self.log and self.step != 1:
                raise ConfigError(f"{where}: optuna does not combine log=True with step > 1")
        elif self.log and self.step is not None:
            raise ConfigError(f"{where}: optuna does not combine log=True with a float step")
        if self.step is not None and self.step <= 0:
            raise ConfigError(f"{where}: step must be > 0, got {self.step}")
        try:
            self.check(self.default, "declaration")
        except ConfigError as exc:
            raise ConfigError(f"{where}: default {self.default!r} does not fit ({exc})") from None

    def check(self, value: Any, strategy: str) -> Any:
        """``value`` as this parameter's type; ConfigError naming ``strategy`` when it does not fit."""
        where = f"strategy {strategy}: param {self.name}={value!r}"
        if self.kind == "categorical":
            for choice in self.choices:
                if _same_choice(value, choice):
                    return choice
            raise ConfigError(f"{where} is not allowed (choices: {', '.join(map(repr, self.choices))})")
        if not _is_number(value) or not math.isfinite(float(value)):
            raise ConfigError(f"{where} must be a finite number ({self._range_text()})")
        if self.kind == "int":
            if float(value) != int(value):
                raise ConfigError(f"{where} must be a whole number ({self._range_text()})")
            value = int(value)
        else:
            value = float(value)
        assert self.low is not None and self.high is not None
        if not self.low <= value <= self.high:
            raise ConfigError(f"{where} is out of range ({self._range_text()})")
        return value

    def _range_text(self) -> str:
        unit = f" {self.doc}" if self.doc else ""
        return f"allowed: {self.kind} {self.low}..{self.high}{unit}"

    def grid_values(self, n: int) -> list[Any]:
        """Up to ``n`` values over [low, high] (log-spaced when ``log``); all choices if categorical."""
        if self.kind == "categorical":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if n <= 1 or self.low == self.high:
            return [self.default]
        raw = np.geomspace(self.low, self.high, n) if self.log else np.linspace(self.low, self.high, n)
        values: list[Any] = []
        for x in raw:
            if self.step is not None:
                # Snap to the step grid anchored at low, as optuna does.
                x = self.low + round((x - self.low) / self.step) * self.step
                x = min(max(x, self.low), self.high)
            v: Any = round(float(x)) if self.kind == "int" else float(x)
            if v not in values:
                values.append(v)
        return values


@dataclass(frozen=True)
class BarArrays:
    """One symbol's bars as float64 numpy arrays of equal length; a column not given is None."""

    close: np.ndarray
    open: np.ndarray | None = None
    high: np.ndarray | None = None
    low: np.ndarray | None = None
    volume: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def column(self, name: str) -> np.ndarray:
        value = getattr(self, name)
        if value is None:
            raise DataError(f"bars lack the {name!r} column")
        return value


def as_bar_arrays(bars: Any, need: Sequence[str] = ("close",), *, where: str = "bars") -> BarArrays:
    """One symbol's bars (a polars frame, a mapping of arrays or :class:`BarArrays`) as float64 arrays.

    A frame must hold one symbol (a ``symbol`` column with one value, or none) in ascending ``ts`` order.
    Raises DataError when a column in ``need`` is missing or the lengths differ.

    >>> as_bar_arrays({"close": [1.0, 2.0]}).close
    array([1., 2.])
    """
    if isinstance(bars, BarArrays):
        source: Mapping[str, Any] = {c: getattr(bars, c) for c in COLUMNS if getattr(bars, c) is not None}
    elif isinstance(bars, pl.DataFrame):
        if "symbol" in bars.columns and bars.get_column("symbol").n_unique() > 1:
            raise DataError(f"{where}: bars of several symbols; give one symbol's bars (filter on symbol)")
        if "ts" in bars.columns and bars.height > 1 and not bars.get_column("ts").is_sorted():
            raise DataError(f"{where}: bars are not in ascending ts order; sort them by ts first")
        source = {c: bars.get_column(c).cast(pl.Float64).to_numpy() for c in COLUMNS if c in bars.columns}
    elif isinstance(bars, Mapping):
        source = {c: bars[c] for c in COLUMNS if c in bars and bars[c] is not None}
    else:
        raise DataError(
            f"{where}: expected a polars DataFrame or a mapping of arrays, got {type(bars).__name__}"
        )
    missing = [c for c in need if c not in source]
    if "close" not in source:
        missing = ["close", *[c for c in missing if c != "close"]]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}; needed: {', '.join(need)}")
    arrays = {c: np.ascontiguousarray(np.asarray(v, dtype=np.float64)) for c, v in source.items()}
    lengths = {c: a.shape for c, a in arrays.items()}
    n = arrays["close"].shape
    if len(n) != 1 or any(shape != n for shape in lengths.values()):
        raise DataError(f"{where}: columns must be 1-d and of equal length, got shapes {lengths}")
    return BarArrays(**arrays)


# -- the position latch -----------------------------------------------------------------------------------


@njit(cache=True)
def latch_positions(
    enter_long: np.ndarray, exit_long: np.ndarray, enter_short: np.ndarray, exit_short: np.ndarray
) -> np.ndarray:
    """Positions (1, 0, -1 as float64) from entry and exit conditions, one bar at a time.

    Flat: ``enter_long`` goes long, else ``enter_short`` goes short. Long: ``exit_long`` (or
    ``enter_short``) leaves; if ``enter_short`` holds on that bar too it reverses to short. Short is the
    mirror. The state at bar t depends on conditions at bars <= t only.
    """
    n = enter_long.shape[0]
    out = np.zeros(n, dtype=np.float64)
    pos = 0.0
    for t in range(n):
        if pos > 0.0:
            if exit_long[t] or enter_short[t]:
                pos = -1.0 if enter_short[t] else 0.0
        elif pos < 0.0:
            if exit_short[t] or enter_long[t]:
                pos = 1.0 if enter_long[t] else 0.0
        elif enter_long[t]:
            pos = 1.0
        elif enter_short[t]:
            pos = -1.0
        out[t] = pos
    return out


# -- strategies and the registry --------------------------------------------------------------------------

StrategyFunc = Callable[..., np.ndarray]


def _no_warmup(params: Mapping[str, Any]) -> int:
    return 0


@dataclass(frozen=True)
class StrategyDef:
    """A registered strategy: its function, parameters, style, inputs and warm-up.

    ``func(bars: BarArrays, **params) -> array`` of target weights; :meth:`run` validates the parameters,
    converts the bars, and returns the targets clipped to [-1, 1] with every non-finite value set to 0.
    ``style`` drives the composer's regime bias: ``"trend"`` strategies get ``trend_bias`` in trending
    regimes, ``"mean_reversion"`` ones get ``chop_bias`` in choppy regimes. ``warmup(params)`` is the number
    of leading bars that are always 0.
    """

    name: str
    func: StrategyFunc
    params: tuple[Param, ...]
    style: Style = "trend"
    inputs: tuple[str, ...] = ("close",)
    warmup: Callable[[Mapping[str, Any]], int] = _no_warmup
    doc: str = ""
    _by_name: Mapping[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ConfigError(f"strategy {self.name}: style {self.style!r} is not one of {', '.join(STYLES)}")
        bad = [c for c in self.inputs if c not in COLUMNS]
        if bad or "close" not in self.inputs:
            raise ConfigError(f"strategy {self.name}: inputs must include close and be among {COLUMNS}")
        by_name: dict[str, Param] = {}
        for p in self.params:
            if p.name in by_name:
                raise ConfigError(f"strategy {self.name}: param {p.name!r} declared twice")
            if p.above is not None:
                lower = by_name.get(p.above)
                if lower is None or lower.kind == "categorical" or p.kind == "categorical":
                    raise ConfigError(
                        f"strategy {self.name}: param {p.name!r} is above {p.above!r}, which must be a "
                        "numeric param declared before it"
                    )
                if p.high is not None and lower.low is not None and p.high <= lower.low:
                    raise ConfigError(f"strategy {self.name}: {p.name} can never exceed {p.above}")
            by_name[p.name] = p
        object.__setattr__(self, "_by_name", types.MappingProxyType(by_name))
        self.validate({})  # the defaults must satisfy the constraints

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def defaults(self) -> dict[str, Any]:
        """Every parameter at its default."""
        return {p.name: p.default for p in self.params}

    def validate(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Complete ``params`` with defaults, convert and check them; ConfigError names strategy and param.

        >>> get_strategy("sma_cross").validate({"fast": 5})
        {'fast': 5, 'slow': 50, 'allow_short': False}
        """
        params = dict(params or {})
        unknown = [k for k in params if k not in self._by_name]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(str(key), self.param_names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"strategy {self.name}: unknown param {key!r} ({hint}params: {', '.join(self.param_names)})"
            )
        out = {p.name: p.check(params.get(p.name, p.default), self.name) for p in self.params}
        for p in self.params:
            if p.above is not None and not out[p.name] > out[p.above]:
                raise ConfigError(
                    f"strategy {self.name}: param {p.above} ({out[p.above]}) must be less than "
                    f"{p.name} ({out[p.name]})"
                )
        return out

    def suggest(
        self, trial: Any, *, fixed: Mapping[str, Any] | None = None, prefix: str = ""
    ) -> dict[str, Any]:
        """Draw a valid parameter set from an Optuna ``trial`` (``trial.suggest_*``, names ``prefix + name``).

        Parameters in ``fixed``, and those declared ``tunable=False``, are not drawn. A parameter declared
        ``above`` another is drawn from above the other's value, so every draw validates.

        >>> import optuna
        >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
        >>> params = get_strategy("sma_cross").suggest(study.ask())
        """
        fixed = dict(fixed or {})
        values: dict[str, Any] = {}
        for p in self.params:
            if p.name in fixed or not p.tunable:
                values[p.name] = fixed.get(p.name, p.default)
                continue
            key = prefix + p.name
            if p.kind == "categorical":
                values[p.name] = trial.suggest_categorical(key, list(p.choices))
                continue
            low, high = p.low, p.high
            if p.above is not None:
                floor = values[p.above]
                step = p.step or 0.0
                if p.kind == "int":
                    # Stay on this param's step grid (anchored at low) strictly above the other value.
                    k = max(0, math.floor((floor - p.low) / step) + 1)
                    low = max(p.low, p.low + k * int(step))
                else:
                    low = max(p.low, floor + step if step else float(np.nextafter(floor, np.inf)))
                if low > high:
                    raise ConfigError(
                        f"strategy {self.name}: no room for {p.name} above {p.above}={floor} (high {high})"
                    )
            if p.kind == "int":
                values[p.name] = trial.suggest_int(key, int(low), int(high), step=int(p.step or 1), log=p.log)
            else:
                values[p.name] = trial.suggest_float(key, float(low), float(high), step=p.step, log=p.log)
        return self.validate(values)

    def grid(self, n: int = 5, *, fixed: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every valid combination of up to ``n`` values per tunable parameter (all choices of categoricals).

        Non-tunable parameters keep their default unless given in ``fixed``. Combinations that break a
        constraint (``fast >= slow``) are left out. Order is deterministic.

        >>> len(get_strategy("sma_cross").grid(3)) > 0
        True
        """
        fixed = dict(fixed or {})
        axes: list[list[Any]] = []
        for p in self.params:
            if p.name in fixed:
                axes.append([fixed[p.name]])
            elif not p.tunable:
                axes.append([p.default])
            else:
                axes.append(p.grid_values(n))
        out: list[dict[str, Any]] = []
        for combo in itertools.product(*axes):
            candidate = dict(zip(self.param_names, combo, strict=True))
            try:
                out.append(self.validate(candidate))
            except ConfigError:
                continue
        return out

    def run(self, bars: Any, params: Mapping[str, Any] | None = None, **overrides: Any) -> np.ndarray:
        """Target weights in [-1, 1] for every bar (float64, no NaN; 0 during warm-up).

        ``bars`` is a one-symbol polars frame, a mapping of arrays or :class:`BarArrays`; ``params`` and
        keyword ``overrides`` are merged, validated and completed with defaults.

        >>> from trader.data.synth import synth_bars
        >>> bars = synth_bars("SYN000", "1d", "2020-01-01", "2021-12-31", seed=1)
        >>> w = get_strategy("sma_cross").run(bars, fast=10, slow=50)
        """
        values = self.validate({**(params or {}), **overrides})
        arrays = as_bar_arrays(bars, self.inputs, where=f"strategy {self.name}")
        raw = np.asarray(self.func(arrays, **values), dtype=np.float64)
        if raw.shape != (len(arrays),):
            raise DataError(
                f"strategy {self.name} returned shape {raw.shape} for {len(arrays)} bars; "
                "return one weight per bar"
            )
        out = np.where(np.isfinite(raw), np.clip(raw, -1.0, 1.0), 0.0)
        # The warm-up contract holds even for a function that emits values before its inputs are complete.
        out[: max(0, int(self.warmup(values)))] = 0.0
        return out


_REGISTRY: dict[str, StrategyDef] = {}
STRATEGIES: Mapping[str, StrategyDef] = types.MappingProxyType(_REGISTRY)
"""Every registered strategy by name (read-only; use :func:`register_strategy` to add one)."""


def register_strategy(
    name: str,
    func: StrategyFunc | None = None,
    params: Iterable[Param] = (),
    *,
    style: Style = "trend",
    inputs: Sequence[str] = ("close",),
    warmup: Callable[[Mapping[str, Any]], int] | None = None,
    replace: bool = False,
) -> Any:
    """Register ``func`` as strategy ``name``; without ``func``, return a decorator that does.

    ``func(bars: BarArrays, **params) -> np.ndarray`` gives one target weight per bar from rows <= t.
    Re-registering a name raises ConfigError unless ``replace=True``. Returns the :class:`StrategyDef`
    (called directly) or the undecorated function (as a decorator).

    >>> import numpy as np
    >>> def always_long(bars):
    ...     return np.ones(len(bars))
    >>> spec = register_strategy("always_long", always_long, [], style="other")
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"strategy name {name!r} must be a Python-identifier-like string (e.g. sma_cross)")

    def _register(f: StrategyFunc) -> StrategyDef:
        if name in _REGISTRY and not replace:
            raise ConfigError(f"strategy {name!r} is already registered; pass replace=True to redefine it")
        spec = StrategyDef(
            name=name,
            func=f,
            params=tuple(params),
            style=style,
            inputs=tuple(inputs),
            warmup=warmup or _no_warmup,
            doc=(f.__doc__ or "").strip().split("\n\n")[0],
        )
        _REGISTRY[name] = spec
        return spec

    if func is not None:
        return _register(func)

    def decorator(f: StrategyFunc) -> StrategyFunc:
        _register(f)
        return f

    return decorator


def unregister_strategy(name: str) -> None:
    """Remove strategy ``name`` from the registry (a no-op when it is not registered)."""
    _REGISTRY.pop(name, None)


def strategy_names() -> tuple[str, ...]:
    """Registered strategy names, sorted."""
    return tuple(sorted(_REGISTRY))


def get_strategy(name: str) -> StrategyDef:
    """The registered strategy ``name``; ConfigError listing the known names when there is none.

    >>> get_strategy("sma_cross").style
    'trend'
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown strategy {name!r} ({hint}known: {', '.join(strategy_names()) or 'none'})"
        ) from None
