"""Strategy selection by contextual Thompson sampling, with posteriors that are plain, portable data.

Per symbol and per decision period, the bandit picks which strategy (*arm*) drives the position, given the
market *context* at the decision bar's close.

**Context** (:data:`FEATURE_GROUPS`; ``bandit.context_features`` chooses the groups, a bias term of 1 is
always the first element). Every value at bar t is computed from rows <= t only:

* ``regime``: one-hot ``regime_trend, regime_chop, regime_volatile`` from
  :func:`trader.features.regimes.regime_labels` (all 0 while the regime is undefined, its warm-up);
* ``volatility``: annualised realised volatility of the last 20 log returns, a fraction (0.2 = 20 %/yr);
* ``efficiency_ratio``: Kaufman's efficiency ratio over 20 bars, 0..1;
* ``trend_strength``: ADX over 14 bars divided by 100, 0..1;
* ``momentum`` (not in the default set): the 20-bar log return over ``sigma * sqrt(20)`` (``sigma`` the
  per-bar volatility), clipped to [-3, 3].

The first decision is at the first bar >= ``start_index`` whose context is finite; then one every
``decision_every`` bars. A later non-finite feature (a missing bar) counts as 0.

**Model.** Per arm a Bayesian linear regression ``reward = x' beta + e``, ``e ~ N(0, sigma^2)``, with the
Normal-inverse-gamma prior ``beta | sigma^2 ~ N(0, sigma^2 * prior_variance * I)``,
``sigma^2 ~ InvGamma(prior_a, prior_b)``. The posterior is held as ``mean``, ``precision`` (of beta, in
units of 1 / sigma^2), ``a``, ``b``; one reward updates it in closed form (conjugate, no refitting):
``P' = P + x x'``, ``m' = P'^-1 (P m + x y)``, ``a' = a + 1/2``, ``b' = b + (y^2 + m'P m - m''P' m') / 2``.

**Sampling.** Per arm draw ``sigma^2 ~ InvGamma(a, b)`` and then the arm's expected reward
``x' beta ~ N(x' m, sigma^2 x' P^-1 x)`` (exactly the distribution of ``x' beta`` for ``beta`` drawn from
its posterior, at the cost of one triangular solve); the arm with the highest draw is chosen (ties: the
first). The draws come from a counter-based generator (splitmix64) seeded per decision from
``engine.rng_seed``, the symbol (blake2b) and the decision bar's ``ts``, so a decision's draws do not
depend on how the bars were sliced, on the process, or on any other symbol.

**Reward** of arm ``j`` for a decision at bar t, with ``w`` the arm's own target weights and
``r[u] = close[u] / close[u-1] - 1``: ``sum(w[u-1] * r[u], u = t+1 .. t+horizon)`` minus costs
``(commission_bps + slippage_bps) / 1e4 * sum(|w[u] - w[u-1]|, u = t .. t+horizon-1)`` (the arm's own
trades; switching between arms is charged by the simulator, not in the reward, so every arm's reward is
well defined whichever arm was chosen). With ``reward_scale: vol`` it is divided by
``sigma_t * sqrt(horizon)``, ``sigma_t`` the per-bar volatility at t: a per-period Sharpe-like number
whose noise variance is about 1, which is what the default prior (``prior_a=2, prior_b=1``) expects.

**No lookahead.** The reward of a decision at t is known at bar ``t + horizon``'s close and is applied
before the first decision at or after that bar, never earlier; with ``learn_until`` it is applied only if
``t + horizon <= learn_until``. The returned posteriors hold every reward known by the last bar.

**Learning modes.** ``full_information`` (default): the backtest knows every arm's return, so every arm
is updated with its own (counterfactual) reward. ``bandit``: only the chosen arm is updated, as live.

**Forgetting.** ``discount`` gamma < 1: before each applied reward every arm's posterior is pulled toward
the prior, ``P <- gamma P + (1-gamma) P0`` (and likewise the information vector, ``a`` and ``b``), so the
posterior equals the batch posterior with weight ``gamma^age`` on each reward, and an arm that is not
chosen drifts back to prior uncertainty (and is explored again). ``window``: each arm keeps its last
``window`` rewards; the oldest is removed exactly (a rank-one downdate). A warm-started posterior is the
base the window slides over (its rewards are not in the window, so they are never removed).

**Posteriors as data.** :class:`PosteriorSet` maps symbols to :class:`ArmPosteriors` (per arm: mean,
precision, a, b, update count, last update ts) under a :class:`ContextSpec` (feature names, arm names,
dimension, fingerprint) and a model version; it round-trips exactly through :meth:`PosteriorSet.to_dict`,
JSON and Parquet (:meth:`PosteriorSet.write` / :meth:`PosteriorSet.read`, never pickle), and loading
refuses wrong shapes, non-finite values, a precision that is not positive definite, ``a <= 0`` or
``b <= 0``, an unknown model version or a different context definition.

Example::

    from trader.bandit import bandit_select
    from trader.config import load_settings
    from trader.data.synth import synth_bars

    settings = load_settings(["configs/base.yaml", "configs/demo.yaml"], env={})
    bars = synth_bars("SYN000", "1d", "2020-01-01", "2024-12-31", seed=7)
    res = bandit_select(bars, settings.composer.strategies, settings, start_index=50)
    res.weights            # target weight per bar, decided at each bar's close
    res.decisions          # one row per decision: ts, arm, regime, sampled, context, reward
    res.posteriors.write("posteriors.parquet")
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
from numba import njit

from trader.errors import ConfigError, DataError, TraderError

__all__ = [
    "FEATURE_GROUPS",
    "MODEL_VERSION",
    "ArmPosteriors",
    "BanditModel",
    "BanditResult",
    "ContextSpec",
    "PosteriorSet",
    "ReplayResult",
    "arm_names",
    "bandit_report",
    "bandit_select",
    "decision_seeds",
    "thompson_draw",
    "thompson_replay",
]

MODEL_VERSION: Final = 1

# Feature group -> the context columns it adds, in order. The windows below are part of the definition
# (changing one is a new MODEL_VERSION).
FEATURE_GROUPS: Final[Mapping[str, tuple[str, ...]]] = {
    "regime": ("regime_trend", "regime_chop", "regime_volatile"),
    "volatility": ("volatility",),
    "efficiency_ratio": ("efficiency_ratio",),
    "trend_strength": ("trend_strength",),
    "momentum": ("momentum",),
}
VOL_BARS: Final = 20
ER_BARS: Final = 20
ADX_BARS: Final = 14
MOMENTUM_BARS: Final = 20
_REGIME_NAMES: Final = ("trend", "chop", "volatile")  # codes 0, 1, 2 of regime_labels
_DEFAULT_SYMBOL: Final = "ASSET"  # the name trader.backtest gives bars without a symbol column
_NAT: Final = np.iinfo(np.int64).min  # "never updated" in last_update (numpy's NaT)


# -- the context definition -------------------------------------------------------------------------------


def arm_names(arms: Sequence[Any]) -> tuple[str, ...]:
    """Arm names from strategy specs (``.name``) or plain names; a repeated name gets ``#2``, ``#3``...

    >>> arm_names(["sma_cross", "rsi_reversion", "sma_cross"])
    ('sma_cross', 'rsi_reversion', 'sma_cross#2')
    """
    out: list[str] = []
    seen: dict[str, int] = {}
    for arm in arms:
        name = arm if isinstance(arm, str) else getattr(arm, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"bandit: arm {arm!r} has no strategy name")
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return tuple(out)


@dataclass(frozen=True)
class ContextSpec:
    """What a posterior's numbers mean: context column names (``bias`` first), arm names, dimension.

    Two posteriors are compatible only if their fingerprints (sha256 of features, arms and dimension) match.

    >>> spec = ContextSpec.from_groups(["regime", "volatility"], ["sma_cross", "rsi_reversion"])
    >>> spec.features, spec.dim
    (('bias', 'regime_trend', 'regime_chop', 'regime_volatile', 'volatility'), 5)
    """

    features: tuple[str, ...]
    arms: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "arms", tuple(self.arms))

    @classmethod
    def from_groups(cls, groups: Sequence[str], arms: Sequence[Any]) -> ContextSpec:
        """The context of feature ``groups`` (keys of :data:`FEATURE_GROUPS`) and ``arms`` (specs, names)."""
        columns = ["bias"]
        for group in groups:
            if group not in FEATURE_GROUPS:
                raise ConfigError(
                    f"bandit.context_features: unknown feature {group!r} (known: {', '.join(FEATURE_GROUPS)})"
                )
            columns.extend(FEATURE_GROUPS[group])
        if len(set(columns)) != len(columns):
            raise ConfigError("bandit.context_features: a feature is listed twice; list each once")
        names = arm_names(arms)
        if not names:
            raise ConfigError("bandit: no arms; configure composer.strategies (see configs/demo.yaml)")
        return cls(tuple(columns), names)

    @classmethod
    def from_settings(cls, settings: Any, arms: Sequence[Any] | None = None) -> ContextSpec:
        """The context that ``settings`` define (arms default to ``settings.composer.strategies``)."""
        chosen = settings.composer.strategies if arms is None else arms
        return cls.from_groups(settings.bandit.context_features, chosen)

    @property
    def dim(self) -> int:
        return len(self.features)

    @property
    def fingerprint(self) -> str:
        text = json.dumps({"features": list(self.features), "arms": list(self.arms), "dim": self.dim})
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "arms": list(self.arms),
            "dim": self.dim,
            "fingerprint": self.fingerprint,
        }

    def describe(self) -> str:
        return f"arms [{', '.join(self.arms)}], features [{', '.join(self.features)}]"


# -- the model's numbers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BanditModel:
    """Prior, forgetting and learning mode of the bandit (see the module doc; built from BanditSettings).

    >>> from trader.config import BanditSettings
    >>> BanditModel.from_settings(BanditSettings()).discount
    0.99
    """

    prior_variance: float = 1.0
    prior_a: float = 2.0
    prior_b: float = 1.0
    forgetting: str = "discount"
    discount: float = 1.0
    window: int = 250
    full_information: bool = True

    def __post_init__(self) -> None:
        for name in ("prior_variance", "prior_a", "prior_b"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"bandit.{name} must be a finite number > 0, got {value}")
        if not 0 < self.discount <= 1:
            raise ConfigError(f"bandit.discount must be within (0, 1], got {self.discount}")
        if self.forgetting not in ("discount", "window"):
            raise ConfigError(f"bandit.forgetting must be discount or window, got {self.forgetting!r}")
        if int(self.window) < 1:
            raise ConfigError(f"bandit.window must be >= 1, got {self.window}")

    @classmethod
    def from_settings(cls, settings: Any) -> BanditModel:
        """From :class:`~trader.config.BanditSettings` (or a whole Settings)."""
        section = getattr(settings, "bandit", settings)
        return cls(
            prior_variance=float(section.prior_variance),
            prior_a=float(section.prior_a),
            prior_b=float(section.prior_b),
            forgetting=str(section.forgetting),
            discount=float(section.discount),
            window=int(section.window),
            full_information=section.mode == "full_information",
        )


@dataclass(frozen=True)
class ArmPosteriors:
    """One symbol's posteriors, row ``j`` for arm ``j``: ``mean`` (arms, dim), ``precision`` (arms, dim, dim)
    of the coefficients in units of 1 / sigma^2, ``a`` and ``b`` of sigma^2's inverse gamma, ``count`` of
    rewards applied, ``last_update`` (int64 ns UTC of the bar whose close made the last reward known;
    ``numpy.iinfo(int64).min`` = never).

    >>> post = ArmPosteriors.prior(2, 3, BanditModel())
    >>> post.precision[0].tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """

    mean: np.ndarray
    precision: np.ndarray
    a: np.ndarray
    b: np.ndarray
    count: np.ndarray
    last_update: np.ndarray

    @classmethod
    def prior(cls, n_arms: int, dim: int, model: BanditModel) -> ArmPosteriors:
        """Every arm at the prior: mean 0, precision ``I / prior_variance``, ``a0``, ``b0``, no updates."""
        precision = np.zeros((n_arms, dim, dim))
        precision[:, np.arange(dim), np.arange(dim)] = 1.0 / model.prior_variance
        return cls(
            mean=np.zeros((n_arms, dim)),
            precision=precision,
            a=np.full(n_arms, model.prior_a),
            b=np.full(n_arms, model.prior_b),
            count=np.zeros(n_arms, dtype=np.int64),
            last_update=np.full(n_arms, _NAT, dtype=np.int64),
        )

    @property
    def n_arms(self) -> int:
        return int(self.mean.shape[0])

    @property
    def dim(self) -> int:
        return int(self.mean.shape[1])

    def inflated(self, factor: float) -> ArmPosteriors:
        """The same posteriors with the coefficients' variance times ``factor`` (>= 1): precision / factor.

        For a warm start, so old evidence counts less against new rewards; means, a, b are kept.
        """
        if not (math.isfinite(factor) and factor >= 1.0):
            raise ConfigError(f"bandit.warm_start_inflation must be a finite number >= 1, got {factor}")
        return ArmPosteriors(self.mean, self.precision / factor, self.a, self.b, self.count, self.last_update)

    def equals(self, other: ArmPosteriors) -> bool:
        """True when every array is bit-for-bit equal."""
        return all(
            np.array_equal(getattr(self, name), getattr(other, name))
            for name in ("mean", "precision", "a", "b", "count", "last_update")
        )

    def check(self, spec: ContextSpec | None, where: str) -> None:
        """Raise DataError (naming ``where`` and the reason) unless these posteriors are well formed."""
        k = self.n_arms if spec is None else len(spec.arms)
        d = self.dim if spec is None else spec.dim
        shapes = {
            "mean": (k, d),
            "precision": (k, d, d),
            "a": (k,),
            "b": (k,),
            "count": (k,),
            "last_update": (k,),
        }
        for name, shape in shapes.items():
            arr = getattr(self, name)
            if arr.shape != shape:
                raise DataError(
                    f"{where}: {name} has shape {arr.shape}, expected {shape} ({k} arms, dim {d})"
                )
        names = spec.arms if spec is not None else tuple(str(j) for j in range(k))
        for name in ("mean", "precision", "a", "b"):
            arr = getattr(self, name)
            if not np.isfinite(arr).all():
                j = int(np.flatnonzero(~np.isfinite(arr.reshape(k, -1)).all(axis=1))[0])
                raise DataError(f"{where}: {name} of arm {names[j]} is not finite")
        for name in ("a", "b"):
            arr = getattr(self, name)
            if (arr <= 0).any():
                j = int(np.flatnonzero(arr <= 0)[0])
                raise DataError(f"{where}: {name} of arm {names[j]} is {float(arr[j])}; it must be > 0")
        if (self.count < 0).any():
            raise DataError(f"{where}: a negative update count")
        for j in range(k):
            p = self.precision[j]
            scale = max(float(np.abs(p).max()), 1e-300)
            if np.abs(p - p.T).max() > 1e-9 * scale:
                raise DataError(f"{where}: precision of arm {names[j]} is not symmetric")
            try:
                np.linalg.cholesky(p)
            except np.linalg.LinAlgError:
                raise DataError(f"{where}: precision of arm {names[j]} is not positive definite") from None


@dataclass(frozen=True)
class PosteriorSet:
    """Posteriors of several symbols under one context definition and model version.

    >>> spec = ContextSpec.from_groups(["volatility"], ["sma_cross", "rsi_reversion"])
    >>> ps = PosteriorSet(spec, {"SPY": ArmPosteriors.prior(2, spec.dim, BanditModel())})
    >>> PosteriorSet.from_dict(ps.to_dict()).symbols["SPY"].equals(ps.symbols["SPY"])
    True
    """

    context: ContextSpec
    symbols: Mapping[str, ArmPosteriors] = field(default_factory=dict)
    model_version: int = MODEL_VERSION

    @classmethod
    def empty(cls, context: ContextSpec) -> PosteriorSet:
        return cls(context, {})

    def get(self, symbol: str, model: BanditModel) -> ArmPosteriors:
        """``symbol``'s posteriors, or the prior when the set has none for it."""
        found = self.symbols.get(symbol)
        if found is None:
            return ArmPosteriors.prior(len(self.context.arms), self.context.dim, model)
        return found

    def merge(self, other: PosteriorSet) -> PosteriorSet:
        """Both sets' symbols (``other`` wins on a symbol in both); the contexts must match."""
        _require_context(other.context, self.context, "posteriors to merge")
        return PosteriorSet(self.context, {**self.symbols, **other.symbols}, self.model_version)

    def inflated(self, factor: float) -> PosteriorSet:
        """Every symbol's coefficient variance times ``factor`` (see :meth:`ArmPosteriors.inflated`)."""
        return PosteriorSet(
            self.context, {s: p.inflated(factor) for s, p in self.symbols.items()}, self.model_version
        )

    def equals(self, other: PosteriorSet) -> bool:
        return (
            self.model_version == other.model_version
            and self.context == other.context
            and sorted(self.symbols) == sorted(other.symbols)
            and all(p.equals(other.symbols[s]) for s, p in self.symbols.items())
        )

    # -- plain data ----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data; floats are written exactly (shortest round-trip repr)."""
        symbols = {}
        for symbol in sorted(self.symbols):
            post = self.symbols[symbol]
            symbols[symbol] = [
                {
                    "arm": arm,
                    "mean": post.mean[j].tolist(),
                    "precision": post.precision[j].tolist(),
                    "a": float(post.a[j]),
                    "b": float(post.b[j]),
                    "count": int(post.count[j]),
                    "last_update": _ts_text(int(post.last_update[j])),
                }
                for j, arm in enumerate(self.context.arms)
            ]
        return {"model_version": self.model_version, "context": self.context.to_dict(), "symbols": symbols}

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, expect: ContextSpec | None = None, where: str = "posteriors"
    ) -> PosteriorSet:
        """Rebuild from :meth:`to_dict` output, checking everything (see the module doc).

        ``expect``: the context the caller will use; a different one raises ConfigError. Malformed data
        raises DataError; both name ``where`` (the file) and the reason.
        """
        try:
            spec = _context_from_data(data, where, expect)
            raw = data["symbols"]
            if not isinstance(raw, Mapping):
                raise DataError(f"{where}: 'symbols' must map symbol -> list of arms")
            symbols = {}
            for symbol, rows in raw.items():
                here = f"{where}: symbol {symbol}"
                if not isinstance(rows, list) or [r.get("arm") for r in rows] != list(spec.arms):
                    raise DataError(
                        f"{here}: arms must be listed once each, in order: {', '.join(spec.arms)}"
                    )
                post = ArmPosteriors(
                    mean=_float_array([r["mean"] for r in rows], here, "mean"),
                    precision=_float_array([r["precision"] for r in rows], here, "precision"),
                    a=_float_array([r["a"] for r in rows], here, "a"),
                    b=_float_array([r["b"] for r in rows], here, "b"),
                    count=_count_array([r["count"] for r in rows], here),
                    last_update=np.array([_ts_value(r["last_update"], here) for r in rows], dtype=np.int64),
                )
                post.check(spec, here)
                symbols[str(symbol)] = post
        except TraderError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{where}: malformed posterior data ({type(exc).__name__}: {exc})") from None
        return cls(spec, symbols, MODEL_VERSION)

    # -- files ---------------------------------------------------------------------------------------------

    def write(self, path: str | Path) -> Path:
        """Write to ``path``: JSON when it ends in ``.json``, else Parquet; atomically (temp file, rename).

        Parquet: one row per (symbol, arm) with ``symbol, arm_index, arm, mean, precision`` (row-major,
        dim x dim), ``a, b, count, last_update``; the model version and the context definition are in the
        file's key-value metadata under ``trader.bandit``.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            if target.suffix.lower() == ".json":
                Path(temp).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
            else:
                self._write_parquet(Path(temp))
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def read(cls, path: str | Path, *, expect: ContextSpec | None = None) -> PosteriorSet:
        """Read a file written by :meth:`write` (JSON by its ``.json`` suffix, else Parquet) and check it.

        >>> # PosteriorSet.read("runs/x/posteriors.parquet", expect=ContextSpec.from_settings(settings))
        """
        source = Path(path)
        where = f"posteriors {source}"
        if not source.is_file():
            raise DataError(f"{where}: no such file")
        if source.suffix.lower() == ".json":
            try:
                data = json.loads(source.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(f"{where}: not readable as JSON ({exc})") from None
            if not isinstance(data, Mapping):
                raise DataError(f"{where}: expected a JSON object at the top")
            return cls.from_dict(data, expect=expect, where=where)
        return cls._read_parquet(source, expect, where)

    def _write_parquet(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        k, d = len(self.context.arms), self.context.dim
        order = sorted(self.symbols)
        n = len(order) * k
        mean = np.concatenate([self.symbols[s].mean.reshape(-1) for s in order]) if order else np.empty(0)
        prec = (
            np.concatenate([self.symbols[s].precision.reshape(-1) for s in order]) if order else np.empty(0)
        )

        def lists(values: np.ndarray, width: int) -> pa.Array:
            offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
            return pa.ListArray.from_arrays(offsets, pa.array(values, type=pa.float64()))

        def stacked(name: str) -> np.ndarray:
            return np.concatenate([getattr(self.symbols[s], name) for s in order]) if order else np.empty(0)

        last = stacked("last_update").astype(np.int64)
        table = pa.table(
            {
                "symbol": pa.array([s for s in order for _ in range(k)], type=pa.string()),
                "arm_index": pa.array(np.tile(np.arange(k, dtype=np.int32), len(order)), type=pa.int32()),
                "arm": pa.array(list(self.context.arms) * len(order), type=pa.string()),
                "mean": lists(mean, d),
                "precision": lists(prec, d * d),
                "a": pa.array(stacked("a").astype(np.float64), type=pa.float64()),
                "b": pa.array(stacked("b").astype(np.float64), type=pa.float64()),
                "count": pa.array(stacked("count").astype(np.int64), type=pa.int64()),
                "last_update": pa.array(last, type=pa.int64(), mask=last == _NAT).cast(
                    pa.timestamp("ns", tz="UTC")
                ),
            }
        )
        meta = {"model_version": self.model_version, "context": self.context.to_dict()}
        table = table.replace_schema_metadata({"trader.bandit": json.dumps(meta)})
        pq.write_table(table, path)

    @classmethod
    def _read_parquet(cls, path: Path, expect: ContextSpec | None, where: str) -> PosteriorSet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{where}: not readable as Parquet ({exc})") from None
        meta = (table.schema.metadata or {}).get(b"trader.bandit")
        if meta is None:
            raise DataError(f"{where}: no trader.bandit metadata; not a posterior file written by trader")
        try:
            header = json.loads(meta)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: unreadable trader.bandit metadata ({exc})") from None
        columns = ("symbol", "arm_index", "arm", "mean", "precision", "a", "b", "count", "last_update")
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise DataError(f"{where}: missing column(s) {', '.join(missing)}")
        frame = pl.from_arrow(table.select(list(columns)))
        assert isinstance(frame, pl.DataFrame)
        last = frame["last_update"]
        if last.dtype != pl.Datetime("ns", "UTC"):
            raise DataError(f"{where}: last_update must be a UTC nanosecond timestamp, got {last.dtype}")
        frame = frame.with_columns(pl.col("last_update").dt.epoch("ns"))
        symbols: dict[str, list[dict[str, Any]]] = {}
        for row in frame.sort("symbol", "arm_index").iter_rows(named=True):
            if row["mean"] is None or row["precision"] is None:
                raise DataError(f"{where}: symbol {row['symbol']}: a null mean or precision")
            d = len(row["mean"])
            flat = row["precision"]
            if len(flat) != d * d:
                raise DataError(
                    f"{where}: symbol {row['symbol']} arm {row['arm']}: precision has {len(flat)} values, "
                    f"expected {d * d}"
                )
            symbols.setdefault(row["symbol"], []).append(
                {
                    "arm": row["arm"],
                    "mean": row["mean"],
                    "precision": [flat[i * d : (i + 1) * d] for i in range(d)],
                    "a": row["a"],
                    "b": row["b"],
                    "count": row["count"],
                    "last_update": None if row["last_update"] is None else int(row["last_update"]),
                }
            )
        if not isinstance(header, Mapping):
            raise DataError(f"{where}: trader.bandit metadata must be a JSON object")
        data = {**header, "symbols": symbols}
        return cls.from_dict(data, expect=expect, where=where)


def _require_context(found: ContextSpec, expected: ContextSpec, where: str) -> None:
    if found.fingerprint != expected.fingerprint:
        raise ConfigError(
            f"{where}: made for a different context definition ({found.describe()}); this run uses "
            f"{expected.describe()}; use posteriors from the same composer.strategies and "
            "bandit.context_features, or start from the prior"
        )


def _context_from_data(data: Mapping[str, Any], where: str, expect: ContextSpec | None) -> ContextSpec:
    if not isinstance(data, Mapping):
        raise DataError(f"{where}: expected a mapping")
    version = data.get("model_version")
    if isinstance(version, bool) or version != MODEL_VERSION:
        raise ConfigError(
            f"{where}: unknown bandit model version {version!r} (this build reads version {MODEL_VERSION}); "
            "re-export the posteriors with this version or start from the prior"
        )
    ctx = data.get("context")
    if not isinstance(ctx, Mapping):
        raise DataError(f"{where}: no context definition")
    features, arms, dim = ctx.get("features"), ctx.get("arms"), ctx.get("dim")
    for name, value in (("features", features), ("arms", arms)):
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise DataError(f"{where}: context {name} must be a list of names")
    assert isinstance(features, list) and isinstance(arms, list)
    if not arms or len(set(arms)) != len(arms) or len(set(features)) != len(features):
        raise DataError(f"{where}: context arms and features must be non-empty and unique")
    spec = ContextSpec(tuple(features), tuple(arms))
    if isinstance(dim, bool) or dim != spec.dim:
        raise DataError(f"{where}: context dim {dim!r} does not match its {spec.dim} features")
    if ctx.get("fingerprint") != spec.fingerprint:
        raise DataError(f"{where}: context fingerprint does not match its definition (file altered?)")
    if expect is not None:
        _require_context(spec, expect, where)
    return spec


def _float_array(values: Any, where: str, name: str) -> np.ndarray:
    if any(isinstance(v, bool) for v in np.ravel(np.asarray(values, dtype=object))):
        raise DataError(f"{where}: {name} holds a boolean, expected numbers")
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {name} is not a regular array of numbers") from None


def _count_array(values: list[Any], where: str) -> np.ndarray:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise DataError(f"{where}: count {v!r} must be a whole number")
    return np.asarray(values, dtype=np.int64)


def _ts_text(ns: int) -> str | None:
    if ns == _NAT:
        return None
    return str(np.datetime64(ns, "ns")) + "Z"


def _ts_value(value: Any, where: str) -> int:
    if value is None:
        return _NAT
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return int(np.datetime64(value.removesuffix("Z"), "ns").astype(np.int64))
        except ValueError:
            pass
    raise DataError(f"{where}: last_update {value!r} is not an ISO timestamp (UTC) or null")


# -- random numbers: a counter-based generator, the same on every machine and process ----------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix64_np(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over a uint64 array (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def decision_seeds(rng_seed: int, symbol: str, ts_ns: Any) -> np.ndarray:
    """Seed of each decision (uint64): blake2b of ``(rng_seed, symbol)``, mixed with the decision's ``ts``.

    ``ts_ns``: int64 nanoseconds (UTC) of the decision bars. Stable across processes, machines and versions
    of Python (no ``hash()``).

    >>> decision_seeds(0, "SPY", [0, 1]).dtype
    dtype('uint64')
    """
    digest = hashlib.blake2b(f"{int(rng_seed)}\0{symbol}".encode(), digest_size=8).digest()
    key = np.uint64(int.from_bytes(digest, "little"))
    ts = np.atleast_1d(np.asarray(ts_ns, dtype=np.int64)).view(np.uint64)
    return _mix64_np(key ^ _mix64_np(ts + _GOLDEN))


@njit(cache=True)
def _mix64(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _uniform(state: np.ndarray) -> float:
    """A uniform in (0, 1) from the splitmix64 stream in ``state[0]``."""
    state[0] = state[0] + _GOLDEN
    bits = _mix64(state[0]) >> np.uint64(11)
    return (float(bits) + 0.5) * (1.0 / 9007199254740992.0)  # 2**-53


@njit(cache=True)
def _normal(state: np.ndarray) -> float:
    """A standard normal (Box-Muller, cosine branch; two uniforms per draw)."""
    u1 = _uniform(state)
    u2 = _uniform(state)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@njit(cache=True)
def _gamma(state: np.ndarray, shape: float) -> float:
    """A Gamma(shape, 1) draw (Marsaglia and Tsang 2000; shape < 1 by the boost U^(1/shape))."""
    boost = 1.0
    if shape < 1.0:
        boost = _uniform(state) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = _normal(state)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = _uniform(state)
        if u < 1.0 - 0.0331 * x * x * x * x:
            return d * v * boost
        if math.log(u) < 0.5 * x * x + d * (1.0 - v + math.log(v)):
            return d * v * boost


# -- the kernel: sampling and conjugate updates -----------------------------------------------------------


@njit(cache=True)
def _cholesky(a: np.ndarray, lower: np.ndarray) -> bool:
    """Lower Cholesky factor of ``a`` into ``lower``; False when ``a`` is not positive definite."""
    d = a.shape[0]
    for j in range(d):
        s = a[j, j]
        for p in range(j):
            s -= lower[j, p] * lower[j, p]
        if not s > 0.0:
            return False
        ljj = math.sqrt(s)
        lower[j, j] = ljj
        for i in range(j + 1, d):
            s = a[i, j]
            for p in range(j):
                s -= lower[i, p] * lower[j, p]
            lower[i, j] = s / ljj
        for i in range(j):
            lower[i, j] = 0.0
    return True


@njit(cache=True)
def _forward(lower: np.ndarray, rhs: np.ndarray, out: np.ndarray) -> None:
    d = rhs.shape[0]
    for i in range(d):
        s = rhs[i]
        for p in range(i):
            s -= lower[i, p] * out[p]
        out[i] = s / lower[i, i]


@njit(cache=True)
def _backward(lower: np.ndarray, rhs: np.ndarray, out: np.ndarray) -> None:
    d = rhs.shape[0]
    for i in range(d - 1, -1, -1):
        s = rhs[i]
        for p in range(i + 1, d):
            s -= lower[p, i] * out[p]
        out[i] = s / lower[i, i]


@njit(cache=True)
def _step(
    arm: int,
    x: np.ndarray,
    y: float,
    sign: float,
    gamma: float,
    mean: np.ndarray,
    prec: np.ndarray,
    chol: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    lam0: float,
    a0: float,
    b0: float,
    eta: np.ndarray,
    tmp: np.ndarray,
) -> None:
    """Forget toward the prior by ``gamma``, then add (sign 1), remove (sign -1) or skip (sign 0) ``(x, y)``.

    With ``eta = P m`` (the information vector) and ``Q = m' P m``:
    ``P <- gamma P + (1 - gamma) P0 + sign x x'``, ``eta <- gamma eta + sign x y``, ``m = P^-1 eta``,
    ``a <- gamma a + (1 - gamma) a0 + sign / 2``,
    ``b <- gamma b + (1 - gamma) b0 + (sign y^2 + gamma Q_old - Q_new) / 2``. This keeps
    ``b = b0 + (sum of weighted y^2 - Q) / 2`` (prior mean 0), so the result equals the batch posterior.
    """
    d = x.shape[0]
    m = mean[arm]
    p = prec[arm]
    q_old = 0.0
    for i in range(d):
        s = 0.0
        for j in range(d):
            s += p[i, j] * m[j]
        eta[i] = gamma * s
        q_old += s * m[i]
    if gamma != 1.0:
        for i in range(d):
            for j in range(d):
                p[i, j] *= gamma
            p[i, i] += (1.0 - gamma) * lam0
    if sign != 0.0:
        for i in range(d):
            eta[i] += sign * x[i] * y
            for j in range(d):
                p[i, j] += sign * x[i] * x[j]
    if not _cholesky(p, chol[arm]):
        raise ValueError("bandit: a posterior precision lost positive definiteness")
    _forward(chol[arm], eta, tmp)
    _backward(chol[arm], tmp, m)
    q_new = 0.0
    for i in range(d):
        q_new += eta[i] * m[i]
    a[arm] = gamma * a[arm] + (1.0 - gamma) * a0 + 0.5 * sign
    b_new = gamma * b[arm] + (1.0 - gamma) * b0 + 0.5 * (sign * y * y + gamma * q_old - q_new)
    # b stays >= gamma b + (1 - gamma) b0 in exact arithmetic; the floor only catches rounding.
    floor = 1e-12 * b0
    b[arm] = b_new if b_new > floor else floor


@njit(cache=True)
def _replay_kernel(
    contexts: np.ndarray,
    rewards: np.ndarray,
    ready: np.ndarray,
    reward_ts: np.ndarray,
    seeds: np.ndarray,
    mean: np.ndarray,
    prec: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    count: np.ndarray,
    last: np.ndarray,
    full_information: bool,
    use_window: bool,
    window: int,
    discount: float,
    lam0: float,
    a0: float,
    b0: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m, d = contexts.shape
    k = rewards.shape[1]
    chol = np.zeros((k, d, d))
    for arm in range(k):
        if not _cholesky(prec[arm], chol[arm]):
            raise ValueError("bandit: a posterior precision is not positive definite")
    chosen = np.zeros(m, dtype=np.int64)
    sampled = np.zeros((m, k))
    applied = np.zeros(m, dtype=np.bool_)
    eta = np.zeros(d)
    tmp = np.zeros(d)
    state = np.zeros(1, dtype=np.uint64)
    gamma = 1.0 if use_window else discount
    cap = window if use_window else 1
    wx = np.zeros((k, cap, d))
    wy = np.zeros((k, cap))
    wn = np.zeros(k, dtype=np.int64)
    wstart = np.zeros(k, dtype=np.int64)
    nxt = 0
    for i in range(m + 1):
        # Rewards that became known at or before this decision's bar (or by the last bar, at the end).
        while nxt < m and ready[nxt] <= i:
            j = nxt
            nxt += 1
            arm_j = chosen[j]
            if full_information:
                usable = False
                for arm in range(k):
                    if math.isfinite(rewards[j, arm]):
                        usable = True
            else:
                usable = math.isfinite(rewards[j, arm_j])
            if not usable:
                continue
            applied[j] = True
            x = contexts[j]
            for arm in range(k):
                y = rewards[j, arm]
                has = math.isfinite(y) and (full_information or arm == arm_j)
                if not has:
                    if gamma != 1.0:
                        _step(arm, x, 0.0, 0.0, gamma, mean, prec, chol, a, b, lam0, a0, b0, eta, tmp)
                    continue
                _step(arm, x, y, 1.0, gamma, mean, prec, chol, a, b, lam0, a0, b0, eta, tmp)
                count[arm] += 1
                last[arm] = reward_ts[j]
                if use_window:
                    slot = (wstart[arm] + wn[arm]) % cap
                    if wn[arm] == cap:  # full: drop the oldest reward exactly
                        old = wstart[arm]
                        _step(
                            arm,
                            wx[arm, old],
                            wy[arm, old],
                            -1.0,
                            1.0,
                            mean,
                            prec,
                            chol,
                            a,
                            b,
                            lam0,
                            a0,
                            b0,
                            eta,
                            tmp,
                        )
                        wstart[arm] = (old + 1) % cap
                        slot = old
                    else:
                        wn[arm] += 1
                    wx[arm, slot] = x
                    wy[arm, slot] = y
        if i == m:
            break
        state[0] = seeds[i]
        chosen[i] = thompson_draw(state, contexts[i], a, b, chol, mean, tmp, sampled[i])
    return chosen, sampled, applied


@njit(cache=True)
def thompson_draw(
    state: np.ndarray,
    x: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    chol: np.ndarray,
    mean: np.ndarray,
    tmp: np.ndarray,
    values: np.ndarray,
) -> int:
    """One Thompson draw per arm at context ``x``: sigma^2 ~ InvGamma(a, b), then
    x'beta ~ N(x'm, sigma^2 x'P^-1 x) (``chol``: each arm's Cholesky factor of P). Writes each arm's draw to
    ``values`` and returns the arm with the highest (the first on ties). ``state``: the generator, seeded
    by the caller; ``tmp``: scratch of the context's length. Shared by the replay and the live stream."""
    best = -np.inf
    pick = 0
    for arm in range(a.shape[0]):
        sigma2 = b[arm] / _gamma(state, a[arm])
        _forward(chol[arm], x, tmp)
        spread = 0.0
        centre = 0.0
        for p in range(x.shape[0]):
            spread += tmp[p] * tmp[p]
            centre += x[p] * mean[arm, p]
        value = centre + math.sqrt(sigma2 * spread) * _normal(state)
        values[arm] = value
        if value > best:
            best = value
            pick = arm
    return pick


@dataclass(frozen=True)
class ReplayResult:
    """What :func:`thompson_replay` did: ``chosen`` arm per round, ``sampled`` expected rewards (rounds,
    arms), ``applied`` (whether each round's reward reached the posteriors) and the final ``posteriors``."""

    chosen: np.ndarray
    sampled: np.ndarray
    applied: np.ndarray
    posteriors: ArmPosteriors


def thompson_replay(
    contexts: Any,
    rewards: Any,
    *,
    ready: Any,
    seeds: Any,
    model: BanditModel,
    posteriors: ArmPosteriors | None = None,
    reward_ts: Any | None = None,
) -> ReplayResult:
    """Run Thompson sampling over rounds whose contexts and every arm's reward are given as arrays.

    ``contexts``: (rounds, dim); ``rewards``: (rounds, arms), NaN = unknown; ``ready[j]``: the round before
    whose draw round ``j``'s reward is applied (``j < ready[j] <= rounds``; ``rounds`` = after the last
    round; anything larger = never), non-decreasing; ``seeds``: uint64 per round (:func:`decision_seeds`);
    ``reward_ts``: int64 ns stored as ``last_update`` (default: the round number). ``posteriors`` start the
    run (default: the prior) and are not modified.

    >>> import numpy as np
    >>> x = np.ones((3, 1)); r = np.array([[0.0, 1.0]] * 3)
    >>> out = thompson_replay(x, r, ready=[1, 2, 3], seeds=np.arange(3, dtype=np.uint64), model=BanditModel())
    >>> out.posteriors.count.tolist()
    [3, 3]
    """
    x = np.ascontiguousarray(np.asarray(contexts, dtype=np.float64))
    r = np.ascontiguousarray(np.asarray(rewards, dtype=np.float64))
    if x.ndim != 2 or r.ndim != 2 or x.shape[0] != r.shape[0]:
        raise DataError(
            f"bandit: contexts {x.shape} and rewards {r.shape} must be (rounds, dim), (rounds, arms)"
        )
    m, d = x.shape
    k = r.shape[1]
    if not np.isfinite(x).all():
        raise DataError("bandit: contexts must be finite")
    ready_arr = np.ascontiguousarray(np.asarray(ready, dtype=np.int64))
    seed_arr = np.ascontiguousarray(np.asarray(seeds, dtype=np.uint64))
    if ready_arr.shape != (m,) or seed_arr.shape != (m,):
        raise DataError(f"bandit: ready and seeds need one value per round ({m})")
    if m and ((ready_arr <= np.arange(m)).any() or (np.diff(ready_arr) < 0).any()):
        raise DataError("bandit: ready[j] must be > j and non-decreasing (a reward is known after its round)")
    ts = np.arange(m, dtype=np.int64) if reward_ts is None else np.asarray(reward_ts, dtype=np.int64)
    start = ArmPosteriors.prior(k, d, model) if posteriors is None else posteriors
    if start.mean.shape != (k, d):
        raise DataError(f"bandit: posteriors are for {start.mean.shape} (arms, dim), the rounds for {(k, d)}")
    mean = np.array(start.mean, dtype=np.float64)
    prec = np.array(start.precision, dtype=np.float64)
    a = np.array(start.a, dtype=np.float64)
    b = np.array(start.b, dtype=np.float64)
    count = np.array(start.count, dtype=np.int64)
    last = np.array(start.last_update, dtype=np.int64)
    try:
        chosen, sampled, applied = _replay_kernel(
            x,
            r,
            ready_arr,
            np.ascontiguousarray(ts),
            seed_arr,
            mean,
            prec,
            a,
            b,
            count,
            last,
            model.full_information,
            model.forgetting == "window",
            int(model.window),
            float(model.discount),
            1.0 / model.prior_variance,
            model.prior_a,
            model.prior_b,
        )
    except ValueError as exc:  # a precision that lost positive definiteness: degenerate input
        raise DataError(f"{exc}; check the posteriors and the contexts (scale, collinearity)") from None
    return ReplayResult(chosen, sampled, applied, ArmPosteriors(mean, prec, a, b, count, last))


# -- one symbol's bars ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BanditResult:
    """:func:`bandit_select` for one symbol.

    ``weights``: target weight per bar in [-1, 1], the chosen arm's own target on every bar of its decision
    period, decided at the bar's close (0 before the first decision; a NaN arm target is 0 = flat).
    ``decisions``: one row per decision (see :func:`bandit_select`). ``posteriors``: the set after the run.
    """

    weights: np.ndarray
    decisions: pl.DataFrame
    posteriors: PosteriorSet
    arms: tuple[str, ...]
    symbol: str


def bandit_select(
    bars: pl.DataFrame,
    arms: Sequence[Any],
    settings: Any,
    posteriors: PosteriorSet | None = None,
    start_index: int = 0,
    learn_until: int | None = None,
    *,
    interval: str | None = None,
) -> BanditResult:
    """Let the bandit pick a strategy per decision period over one symbol's ``bars``; see the module doc.

    ``bars``: ``ts, open, high, low, close, volume`` (and optionally ``symbol``, one value) sorted by ts;
    ``arms``: strategy specs (``.name``, ``.params``), e.g. ``settings.composer.strategies``; ``settings``:
    a :class:`~trader.config.Settings` (``bandit``, ``engine.rng_seed``, ``costs``, ``data.interval``);
    ``posteriors``: where to start (default: the prior; the symbol's entry is used, the prior if absent);
    ``start_index``: first bar (0-based row) that may decide, earlier rows only warm the features;
    ``learn_until``: a row index; rewards whose window ends after it are not applied (train on a train
    window, then trade the test window with the posteriors it returns); ``interval``: annualises the
    volatility feature (default ``settings.data.interval``).

    ``decisions`` columns: ``ts`` (decision bar), ``symbol`` (when ``bars`` has one), ``decision`` (0-based
    number within this call), ``arm``, ``regime`` (trend/chop/volatile, null = undefined), ``sampled``
    (each arm's sampled expected reward), ``context`` (the context vector, ``posteriors.context.features``
    order), ``reward`` (the chosen arm's reward, null until its window ends within ``bars``) and
    ``arm_rewards`` (every arm's reward, null likewise).

    >>> from trader.config import load_settings
    >>> from trader.data.synth import synth_bars
    >>> settings = load_settings(["configs/demo.yaml"], env={})
    >>> bars = synth_bars("SYN000", "1d", "2020-01-01", "2022-12-31", seed=7)
    >>> res = bandit_select(bars, settings.composer.strategies, settings, start_index=50)
    >>> res.decisions.columns[:4]
    ['ts', 'decision', 'arm', 'regime']
    """
    from trader.metrics import periods_per_year

    section = settings.bandit
    model = BanditModel.from_settings(section)
    spec = ContextSpec.from_groups(section.context_features, arms)
    frame, symbol = _one_symbol(bars)
    n = frame.height
    if isinstance(start_index, bool) or not isinstance(start_index, int | np.integer) or start_index < 0:
        raise ConfigError(f"bandit: start_index must be a row index >= 0, got {start_index!r}")
    if learn_until is not None and (
        isinstance(learn_until, bool) or not isinstance(learn_until, int | np.integer)
    ):
        raise ConfigError(f"bandit: learn_until must be a row index or None, got {learn_until!r}")
    if posteriors is not None:
        _require_context(posteriors.context, spec, "bandit: the posteriors given")
        base = posteriors
    else:
        base = PosteriorSet.empty(spec)

    targets = _arm_targets(frame, arms)
    ppy = periods_per_year(interval or settings.data.interval)
    context, regimes, sigma = _context(frame, section.context_features, ppy)
    close = frame["close"].cast(pl.Float64).to_numpy()

    # Decision bars: from the first finite context at or after start_index, every decision_every bars.
    finite = np.isfinite(context).all(axis=1)
    finite[: int(start_index)] = False
    eligible = np.flatnonzero(finite)
    every, horizon = int(section.decision_every), int(section.horizon)
    first = int(eligible[0]) if eligible.size else n
    decide = np.arange(first, n, every, dtype=np.int64)
    m = decide.size

    cost = (float(settings.costs.commission_bps) + float(settings.costs.slippage_bps)) / 1e4
    scale = np.sqrt(horizon) * sigma if section.reward_scale == "vol" else np.ones(n)
    rewards = _period_rewards(targets, close, decide, horizon, cost, scale)
    end = decide + horizon
    usable = end <= n - 1
    if learn_until is not None:
        usable &= end <= int(learn_until)
    ready = np.where(usable, np.searchsorted(decide, end, side="left"), m + 1).astype(np.int64)
    ts_ns = frame["ts"].dt.epoch("ns").to_numpy()
    reward_ts = np.where(end <= n - 1, ts_ns[np.minimum(end, n - 1)], _NAT)
    x = np.nan_to_num(context[decide], nan=0.0, posinf=0.0, neginf=0.0)
    out = thompson_replay(
        x,
        rewards,
        ready=ready,
        seeds=decision_seeds(settings.engine.rng_seed, symbol, ts_ns[decide]),
        model=model,
        posteriors=base.get(symbol, model),
        reward_ts=reward_ts,
    )

    weights = np.zeros(n)
    if m:
        lengths = np.diff(np.append(decide, n))
        rows = np.arange(first, n)
        weights[first:] = np.nan_to_num(targets[rows, np.repeat(out.chosen, lengths)], nan=0.0)
    names = spec.arms
    known = np.isfinite(rewards).all(axis=1) & (end <= n - 1)
    reward = np.where(known, rewards[np.arange(m), out.chosen], np.nan)
    regime_code = regimes[decide]
    data: dict[str, Any] = {"ts": frame["ts"].gather(decide)}
    if "symbol" in frame.columns:
        data["symbol"] = pl.Series("symbol", [symbol] * m, dtype=pl.String)
    data["decision"] = pl.Series("decision", np.arange(m, dtype=np.int64))
    data["arm"] = pl.Series("arm", np.array(names, dtype=object)[out.chosen] if m else [], dtype=pl.String)
    data["regime"] = pl.Series(
        "regime",
        [_REGIME_NAMES[c] if c >= 0 else None for c in regime_code.tolist()],
        dtype=pl.String,
    )
    data["sampled"] = _list_column("sampled", out.sampled, len(names))
    data["context"] = _list_column("context", x, spec.dim)
    data["reward"] = pl.Series("reward", reward, dtype=pl.Float64, nan_to_null=True)
    data["arm_rewards"] = _list_column("arm_rewards", rewards, len(names))
    decisions = pl.DataFrame(data).with_columns(
        pl.when(pl.Series(known)).then(pl.col("arm_rewards")).alias("arm_rewards")
    )
    merged = PosteriorSet(spec, {**base.symbols, symbol: out.posteriors}, MODEL_VERSION)
    return BanditResult(weights, decisions, merged, names, symbol)


def _one_symbol(bars: Any) -> tuple[pl.DataFrame, str]:
    if not isinstance(bars, pl.DataFrame):
        raise DataError(f"bandit: bars must be a polars DataFrame, got {type(bars).__name__}")
    missing = [c for c in ("ts", "high", "low", "close") if c not in bars.columns]
    if missing:
        raise DataError(f"bandit: bars lack column(s) {', '.join(missing)}")
    if bars.height == 0:
        raise DataError("bandit: no bars; check the symbol and the date range")
    symbol = _DEFAULT_SYMBOL
    if "symbol" in bars.columns:
        values = bars["symbol"].unique()
        if values.len() > 1:
            raise DataError("bandit: bars of several symbols; call bandit_select once per symbol")
        symbol = str(values[0])
    if bars.height > 1 and not bars["ts"].is_sorted():
        raise DataError("bandit: bars are not in ascending ts order; sort them by ts first")
    return bars, symbol


def _arm_targets(frame: pl.DataFrame, arms: Sequence[Any]) -> np.ndarray:
    """Each arm's own target weights (bars, arms), computed once, vectorised, by the composer's rules."""
    from trader.composer import Composer
    from trader.strategies import get_strategy

    strategies = []
    for arm in arms:
        spec = get_strategy(arm.name)
        strategies.append((spec, spec.validate(dict(arm.params))))
    return Composer(strategies=tuple(strategies)).strategy_targets(frame)


def _context(
    frame: pl.DataFrame, groups: Sequence[str], periods_per_year: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Context matrix (bars, dim), regime codes (-1 = undefined) and per-bar volatility sigma (fraction)."""
    from trader.features.indicators import adx, efficiency_ratio, realized_vol
    from trader.features.regimes import regime_labels

    high = frame["high"].cast(pl.Float64).to_numpy()
    low = frame["low"].cast(pl.Float64).to_numpy()
    close = frame["close"].cast(pl.Float64).to_numpy()
    n = close.size
    sigma = realized_vol(close, VOL_BARS, 1.0) if n else np.empty(0)
    regimes = (
        regime_labels(high, low, close).astype(np.int64)
        if n and "regime" in groups
        else np.full(n, -1, dtype=np.int64)
    )
    columns: list[np.ndarray] = [np.ones(n)]
    for group in groups:
        if group == "regime":
            columns.extend((regimes == code).astype(np.float64) for code in range(3))
        elif group == "volatility":
            columns.append(sigma * math.sqrt(periods_per_year))
        elif group == "efficiency_ratio":
            columns.append(efficiency_ratio(close, ER_BARS) if n else np.empty(0))
        elif group == "trend_strength":
            columns.append(adx(high, low, close, ADX_BARS)[0] / 100.0 if n else np.empty(0))
        elif group == "momentum":
            moved = np.full(n, np.nan)
            with np.errstate(divide="ignore", invalid="ignore"):
                moved[MOMENTUM_BARS:] = np.log(close[MOMENTUM_BARS:] / close[:-MOMENTUM_BARS])
                z = moved / (sigma * math.sqrt(MOMENTUM_BARS))
            z[np.isinf(z)] = np.nan
            columns.append(np.clip(z, -3.0, 3.0))
        else:
            raise ConfigError(f"bandit.context_features: unknown feature {group!r}")
    return np.column_stack(columns) if n else np.empty((0, len(columns))), regimes, sigma


def _period_rewards(
    targets: np.ndarray, close: np.ndarray, decide: np.ndarray, horizon: int, cost: float, scale: np.ndarray
) -> np.ndarray:
    """Every arm's reward for each decision bar (decisions, arms); NaN when the window passes the last bar
    or the scale is not a positive finite number (see the module doc for the formula)."""
    n, k = targets.shape
    w = np.nan_to_num(targets, nan=0.0)
    r = np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        r[1:] = close[1:] / close[:-1] - 1.0
    r[~np.isfinite(r)] = 0.0  # a missing bar earns nothing
    pnl = np.zeros((n, k))
    pnl[1:] = w[:-1] * r[1:, None]
    trades = np.abs(np.diff(w, axis=0, prepend=np.zeros((1, k))))
    cum_pnl = np.cumsum(pnl, axis=0)
    cum_cost = np.cumsum(trades, axis=0)
    out = np.full((decide.size, k), np.nan)
    end = decide + horizon
    ok = end <= n - 1
    t, e = decide[ok], end[ok]
    earned = cum_pnl[e] - cum_pnl[t]
    before = np.where((t > 0)[:, None], cum_cost[np.maximum(t - 1, 0)], 0.0)
    paid = cum_cost[e - 1] - before
    s = scale[t]
    good = np.isfinite(s) & (s > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (earned - cost * paid) / s[:, None]
    value[~good] = np.nan
    out[ok] = value
    return out


def _list_column(name: str, values: np.ndarray, width: int) -> pl.Series:
    arr = np.asarray(values, dtype=np.float64).reshape(-1, width)
    if arr.shape[0] == 0:
        return pl.Series(name, [], dtype=pl.List(pl.Float64))
    return pl.Series(name, arr).cast(pl.List(pl.Float64))


# -- the report -------------------------------------------------------------------------------------------


def bandit_report(decisions: pl.DataFrame, arms: Sequence[str]) -> dict[str, Any]:
    """Arm shares by regime and cumulative rewards from a decisions table (one or many symbols).

    ``arm_share_by_regime``: per regime (``trend``, ``chop``, ``volatile``, ``undefined``, and ``all``) the
    fraction of decisions that chose each arm (shares sum to 1). ``decisions_by_regime``: the counts.
    ``cumulative_reward``: over decisions whose reward is known, the sum of each arm's reward (had it been
    chosen every time), the ``policy``'s (the chosen arms'), and ``best_arm_hindsight`` (the largest
    single-arm sum); ``best_arm`` names it; ``regret`` = best - policy. Units: those of the reward
    (per-period volatility-scaled by default); overlapping windows (decision_every < horizon) count again.

    >>> import polars as pl
    >>> d = pl.DataFrame({"arm": ["a", "b"], "regime": ["trend", None], "reward": [1.0, None],
    ...                   "arm_rewards": [[1.0, 2.0], None]})
    >>> bandit_report(d, ["a", "b"])["cumulative_reward"]["best_arm_hindsight"]
    2.0
    """
    names = list(arms)
    shares: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    labelled = decisions.with_columns(pl.col("regime").fill_null("undefined"))
    for regime in (*_REGIME_NAMES, "undefined", "all"):
        part = labelled if regime == "all" else labelled.filter(pl.col("regime") == regime)
        if part.height == 0:
            continue
        tally = dict(part.group_by("arm").len().iter_rows())
        counts[regime] = part.height
        shares[regime] = {arm: tally.get(arm, 0) / part.height for arm in names}
    known = decisions.filter(pl.col("arm_rewards").is_not_null())
    if known.height:
        matrix = np.asarray(known["arm_rewards"].to_list(), dtype=np.float64).reshape(-1, len(names))
        per_arm = matrix.sum(axis=0)
        policy = float(known["reward"].sum())
    else:
        per_arm = np.zeros(len(names))
        policy = 0.0
    best = int(np.argmax(per_arm)) if names else 0
    cumulative: dict[str, Any] = {arm: float(per_arm[j]) for j, arm in enumerate(names)}
    cumulative.update(
        policy=policy,
        best_arm_hindsight=float(per_arm[best]) if names else 0.0,
        best_arm=names[best] if names else None,
        regret=(float(per_arm[best]) if names else 0.0) - policy,
        decisions_scored=known.height,
    )
    return {
        "decisions": decisions.height,
        "arm_share_by_regime": shares,
        "decisions_by_regime": counts,
        "cumulative_reward": cumulative,
    }
