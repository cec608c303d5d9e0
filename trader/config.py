"""Validated settings: one frozen ``Settings`` object built from YAML layers, the environment and ``--set``.

Layers, lowest first:

1. the model defaults below (``configs/base.yaml`` spells out the same values);
2. the YAML files given, in order; with ``profile="strict"`` the overlay ``risk_strict.yaml`` (from the
   directory of the first file, else ``./configs``) goes right after the first file;
3. environment variables: ``TRADER_<SECTION>__<KEY>`` (``__`` nests, e.g. ``TRADER_RISK__MAX_DRAWDOWN=0.2``)
   and the established names in :data:`ENV_ALIASES` (``*_PCT`` names are percent and are divided by 100);
4. ``--set key.path=value`` overrides, the value read as YAML (``--set session.symbols=[AAPL,MSFT]``).

Dicts are merged deeply (lists and scalars replace), then the merged result is validated once, so a value
from the environment or ``--set`` is checked exactly like one from a file. Each key remembers its source, and
every problem is raised as a one-line :class:`~trader.errors.ConfigError` naming the source, the dotted key,
the value and what is allowed.

YAML is read with YAML 1.2 scalars: only ``true``/``false`` are booleans, so ``mode: off`` or a ticker
``NO`` stays a string, and ``1e-4`` is a number.

Example::

    from trader.config import load_settings, render_settings
    settings = load_settings(["configs/base.yaml", "configs/demo.yaml"], ["risk.max_drawdown=0.15"],
                             profile="strict")
    print(render_settings(settings))   # secrets shown as **********
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from trader.errors import ConfigError

__all__ = [
    "ENV_ALIASES",
    "ENV_PREFIX",
    "SECRET_MASK",
    "BanditSettings",
    "ComposerSettings",
    "CostsSettings",
    "DataSettings",
    "EngineSettings",
    "GapFillerSettings",
    "IbkrSettings",
    "RaySettings",
    "RiskSettings",
    "SanitySettings",
    "ScoreWeights",
    "SessionSettings",
    "Settings",
    "StrategySpec",
    "SweepParam",
    "SweepSettings",
    "SynthSettings",
    "TickerSpec",
    "WalkForwardSettings",
    "available_profiles",
    "dotted_key",
    "load_settings",
    "parse_key_path",
    "render_settings",
    "with_overrides",
]

# Kept in step with trader.data.schema.INTERVALS (a test checks); not imported so that loading settings
# does not pull in polars and pyarrow.
Interval = Literal["1m", "5m", "1h", "1d"]
Symbol = Annotated[str, Field(min_length=1)]
PAPER_PORTS = (7497, 4002)  # TWS paper, IB Gateway paper
LIVE_PORTS = (7496, 4001)  # TWS live, IB Gateway live
SECRET_MASK = "**********"
ENV_PREFIX = "TRADER_"

# allow_inf_nan=False: a limit of .inf or .nan would pass every range check and disable the rule.
_MODEL_CONFIG = ConfigDict(
    frozen=True, extra="forbid", coerce_numbers_to_str=True, hide_input_in_errors=True, allow_inf_nan=False
)


def _invalid(key: str, message: str, **ctx: Any) -> PydanticCustomError:
    """A validation error pinned to ``key`` (dotted, relative to the model raising it)."""
    return PydanticCustomError("trader_invalid", message, {"key": key, **ctx})


def _check_unique(values: Sequence[str], key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise _invalid(f"{key}[{i}]", "duplicate entry {value}; list each one once", value=repr(value))
        seen.add(value)


# -- sections ---------------------------------------------------------------------------------------------


class EngineSettings(BaseModel):
    """The backtest engine: warm-up, data quality gate, randomness and the account."""

    model_config = _MODEL_CONFIG

    min_history_bars: int = Field(50, gt=0, description="Bars of history a symbol needs before it may trade.")
    max_na_fraction: float = Field(
        0.05, ge=0, le=1, description="Largest fraction (0..1) of missing bars a symbol may have and be used."
    )
    rng_seed: int = Field(0, ge=0, description="Root seed; every random draw derives its seed from this.")
    initial_cash: float = Field(100_000.0, gt=0, description="Starting cash, in account currency.")
    fractional_shares: bool = Field(True, description="Allow fractional share quantities (a broker may not).")


class SanitySettings(BaseModel):
    """What bar validation does with bad bars."""

    model_config = _MODEL_CONFIG

    mode: Literal["enforce", "warn", "repair", "off"] = Field(
        "enforce",
        description="enforce = reject bad bars; warn = log and keep; repair = fix what can be; off.",
    )
    profile: Literal["strict", "relaxed"] = Field("strict", description="Which set of sanity thresholds.")


class DataSettings(BaseModel):
    """Where bars live and which bars to use."""

    model_config = _MODEL_CONFIG

    store: str = Field("./data", description="Bar store URI: a local path or s3://bucket/prefix.")
    interval: Interval = Field("1d", description="Bar interval used by backtests.")
    exchange: str = Field("XNYS", min_length=1, description="Exchange calendar code (ISO MIC, e.g. XNYS).")
    sanity: SanitySettings = Field(default_factory=SanitySettings)

    @field_validator("store")
    @classmethod
    def _store_uri(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError(
                "trader_invalid", "empty store URI; give a local path or s3://bucket/prefix"
            )
        if "://" in value:
            scheme, rest = value.split("://", 1)
            if scheme != "s3":
                raise PydanticCustomError(
                    "trader_invalid",
                    "unsupported URI scheme {scheme}; use a local path or s3://bucket/prefix",
                    {"scheme": repr(scheme)},
                )
            bucket = rest.split("/", 1)[0]
            if not bucket:
                raise PydanticCustomError("trader_invalid", "s3 URI without a bucket; use s3://bucket/prefix")
            if "@" in bucket:
                # Credentials come from the environment or the instance role, never from a URI.
                raise PydanticCustomError(
                    "trader_invalid",
                    "credentials in the store URI; use AWS_* environment variables or a role",
                )
        return value


class WalkForwardSettings(BaseModel):
    """Walk-forward fold plan, in exchange sessions."""

    model_config = _MODEL_CONFIG

    train_len: int = Field(504, gt=0, description="Sessions in each training window (504 = about 2 years).")
    test_len: int = Field(126, gt=0, description="Sessions in each test window.")
    stride: int = Field(126, gt=0, description="Sessions the fold moves forward each step.")
    anchored: bool = Field(False, description="True: every training window starts at the first session.")
    purge: int = Field(5, ge=0, description="Sessions dropped from the end of training before each test.")
    embargo: int = Field(
        5, ge=0, description="Sessions skipped after each test window before training resumes."
    )
    allow_truncated_final_fold: bool = Field(
        False, description="Keep a last test window shorter than test_len."
    )
    scheme: Literal["walk_forward", "cpcv"] = Field(
        "walk_forward", description="walk_forward (rolling/anchored) or cpcv (combinatorial purged CV)."
    )
    n_groups: int = Field(6, ge=2, description="CPCV: contiguous session groups N.")
    k_test_groups: int = Field(2, ge=1, description="CPCV: test groups per split k (< n_groups).")
    grid_size: int = Field(
        20, ge=1, description="Parameter candidates tuned on each train window; 1 = no tuning."
    )
    grid_points_per_param: int = Field(5, ge=1, description="Grid values per tunable strategy parameter.")
    warmup_sessions: int | None = Field(
        None, ge=0, description="Sessions loaded before each fold for indicator warm-up; null = derived."
    )
    symbols_per_task: int | None = Field(
        None, gt=0, description="Symbols per task; null = at least two tasks per CPU."
    )
    folds_per_task: int | None = Field(
        None,
        gt=0,
        description="Consecutive folds per task (signals shared); null = all, split for idle CPUs.",
    )
    max_retries: int = Field(2, ge=0, description="Ray retries of a fold task that crashed (worker died).")


class RiskSettings(BaseModel):
    """Risk limits. Fractions are 0..1 of equity (0.1 = 10 %); notionals are in account currency."""

    model_config = _MODEL_CONFIG

    pos_size_method: Literal["fixed", "vol_target"] = Field(
        "fixed", description="fixed = max_position_pct of equity; vol_target = scale to vol_target."
    )
    vol_target: float = Field(
        0.10, gt=0, le=1, description="Annualised volatility target, fraction (0.1 = 10 %)."
    )
    max_drawdown: float = Field(
        0.20, gt=0, le=1, description="Peak-to-trough equity loss that halts trading."
    )
    daily_loss_limit: float = Field(0.03, gt=0, le=1, description="Loss in one session, fraction of equity.")
    max_position_pct: float = Field(0.10, gt=0, le=1, description="Largest position, fraction of equity.")
    max_gross_leverage: float = Field(1.0, gt=0, description="Gross exposure / equity; may exceed 1.")
    max_per_trade: float = Field(
        10_000.0, gt=0, description="Largest single order notional, account currency."
    )
    max_per_symbol: float = Field(
        20_000.0, gt=0, description="Largest notional in one symbol, account currency."
    )
    max_open_positions: int = Field(20, gt=0, description="Most symbols held at once.")
    max_buying_power: float = Field(
        100_000.0, gt=0, description="Most gross notional committed, account currency."
    )
    stop_loss_pct: float = Field(
        0.05, gt=0, le=1, description="Stop distance below entry, fraction of entry price."
    )

    @model_validator(mode="after")
    def _trade_within_symbol(self) -> RiskSettings:
        if self.max_per_trade > self.max_per_symbol:
            raise _invalid(
                "max_per_trade",
                "max_per_trade ({trade}) exceeds max_per_symbol ({symbol}); lower it or raise max_per_symbol",
                trade=self.max_per_trade,
                symbol=self.max_per_symbol,
            )
        return self


class CostsSettings(BaseModel):
    """Trading costs the simulator charges. bps = 1/10000 of notional."""

    model_config = _MODEL_CONFIG

    commission_bps: float = Field(0.0, ge=0, description="Commission, basis points of notional.")
    commission_per_share: float = Field(0.005, ge=0, description="Commission per share, account currency.")
    min_commission: float = Field(1.0, ge=0, description="Minimum commission per order, account currency.")
    slippage_bps: float = Field(5.0, ge=0, description="Slippage against the fill price, basis points.")


class StrategySpec(BaseModel):
    """One strategy of the composer: its registered name and its parameters."""

    model_config = _MODEL_CONFIG

    name: str = Field(min_length=1, description="Registered strategy name.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Strategy parameters (units per strategy)."
    )

    @model_validator(mode="after")
    def _fast_below_slow(self) -> StrategySpec:
        if "fast" in self.params and "slow" in self.params:
            fast, slow = self.params["fast"], self.params["slow"]
            for key, value in (("fast", fast), ("slow", slow)):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise _invalid(
                        f"params.{key}", "must be a number of bars, got {value}", value=repr(value)
                    )
            if fast >= slow:
                raise _invalid(
                    "params.fast",
                    "fast ({fast}) must be less than slow ({slow})",
                    fast=fast,
                    slow=slow,
                )
        return self


class ScoreWeights(BaseModel):
    """Level-2 composite score weights (dimensionless, >= 0)."""

    model_config = _MODEL_CONFIG

    cagr: float = Field(1.0, ge=0, description="Weight of compound annual growth rate.")
    sharpe: float = Field(1.0, ge=0, description="Weight of the annualised Sharpe ratio.")
    win_rate: float = Field(0.5, ge=0, description="Weight of the fraction of winning trades.")
    avg_trade: float = Field(0.5, ge=0, description="Weight of the average trade return.")
    max_drawdown_penalty: float = Field(1.0, ge=0, description="Weight subtracted per unit of max drawdown.")

    @model_validator(mode="after")
    def _some_weight(self) -> ScoreWeights:
        if not any(getattr(self, name) > 0 for name in type(self).model_fields):
            raise _invalid("cagr", "all score weights are 0; give at least one a positive weight")
        return self


class ComposerSettings(BaseModel):
    """Level 1: regime-weighted softmax blend of strategies; level 2: composite scoring."""

    model_config = _MODEL_CONFIG

    strategies: tuple[StrategySpec, ...] = Field((), description="Strategies blended; empty = no signal.")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature; lower = sharper weights.")
    min_confidence: float = Field(
        0.1, ge=0, le=1, description="Blended |signal| below this fraction is flat."
    )
    hold_on_nan: bool = Field(
        False, description="On a NaN signal keep the position (true) or go flat (false)."
    )
    trend_bias: float = Field(0.0, description="Added to trend strategies' logits in a trending regime.")
    chop_bias: float = Field(
        0.0, description="Added to mean-reversion strategies' logits in a choppy regime."
    )
    volatile_bias: float = Field(
        0.0, description="Added to logits in a volatile regime (negative = de-risk)."
    )
    lookback: int = Field(50, gt=0, description="Bars of trailing strategy returns used to score strategies.")
    score_weights: ScoreWeights = Field(default_factory=ScoreWeights)

    @field_validator("strategies")
    @classmethod
    def _unique_names(cls, value: tuple[StrategySpec, ...]) -> tuple[StrategySpec, ...]:
        names = [s.name for s in value]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _invalid(
                    f"[{i}].name", "duplicate strategy name {name}; name each once", name=repr(name)
                )
        return value


# Context feature groups of trader.bandit (kept in step with trader.bandit.FEATURE_GROUPS; a test checks).
BanditFeature = Literal["regime", "volatility", "efficiency_ratio", "trend_strength", "momentum"]


class BanditSettings(BaseModel):
    """Contextual Thompson sampling over the composer's strategies (see :mod:`trader.bandit`).

    Per arm, a Bayesian linear regression of the reward on the context with a Normal-inverse-gamma prior:
    ``beta | sigma^2 ~ N(0, sigma^2 * prior_variance * I)``, ``sigma^2 ~ InvGamma(prior_a, prior_b)``.
    """

    model_config = _MODEL_CONFIG

    enabled: bool = Field(False, description="Let the bandit choose the strategy per symbol and period.")
    prior_variance: float = Field(
        1.0, gt=0, description="Prior variance of each coefficient, in units of the reward noise variance."
    )
    prior_a: float = Field(2.0, gt=0, description="Inverse-gamma prior shape of the reward noise variance.")
    prior_b: float = Field(
        1.0, gt=0, description="Inverse-gamma prior scale (reward units squared); mean = b / (a - 1)."
    )
    forgetting: Literal["discount", "window"] = Field(
        "discount", description="discount = exponential forgetting; window = last `window` rewards per arm."
    )
    discount: float = Field(
        0.99, gt=0, le=1, description="Per-update forgetting factor, fraction (0, 1]; 1 = remember all."
    )
    window: int = Field(250, gt=0, description="Rewards per arm kept when forgetting = window.")
    horizon: int = Field(5, gt=0, description="Bars ahead over which a choice's reward is measured.")
    decision_every: int = Field(5, gt=0, description="Bars between two decisions (the decision period).")
    mode: Literal["full_information", "bandit"] = Field(
        "full_information", description="full_information = update every arm; bandit = only the one chosen."
    )
    reward_scale: Literal["vol", "none"] = Field(
        "vol", description="vol = divide the reward by the trailing volatility over the horizon; none = raw."
    )
    context_features: tuple[BanditFeature, ...] = Field(
        ("regime", "volatility", "efficiency_ratio", "trend_strength"),
        description="Feature groups forming the context vector (a bias term is always first).",
    )
    warm_start_inflation: float = Field(
        1.0, ge=1, description="Loaded posteriors' coefficient variance is multiplied by this (>= 1)."
    )

    @field_validator("context_features")
    @classmethod
    def _unique_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _check_unique(value, "")
        return value


class SweepParam(BaseModel):
    """The range of one swept setting. Give ``low``/``high`` (with ``step`` or ``log``) or ``choices``."""

    model_config = _MODEL_CONFIG

    type: Literal["int", "float", "categorical"] | None = Field(
        None, description="int, float or categorical; null = int when low and high are integers."
    )
    low: float | None = Field(None, description="Lowest value (inclusive).")
    high: float | None = Field(None, description="Highest value (inclusive).")
    step: float | None = Field(None, gt=0, description="Grid step; null = continuous (floats) or 1 (ints).")
    log: bool = Field(False, description="Sample on a log scale (low must be > 0).")
    choices: list[Any] | None = Field(None, min_length=1, description="Values of a categorical parameter.")

    @model_validator(mode="after")
    def _range_or_choices(self) -> SweepParam:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise _invalid("choices", "give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise _invalid("low", "a swept parameter needs low and high (or choices)")
        if self.low > self.high:
            raise _invalid("low", "low ({low}) is above high ({high})", low=self.low, high=self.high)
        if self.log and self.low <= 0:
            raise _invalid("log", "a log-scale range needs low > 0 (got {low})", low=self.low)
        if self.log and self.step is not None:
            raise _invalid("step", "a log-scale range cannot have a step")
        return self


SweepObjective = Literal["score", "sharpe", "cagr", "total_return", "sortino", "max_drawdown"]


class SweepSettings(BaseModel):
    """Optuna parameter sweep."""

    model_config = _MODEL_CONFIG

    study_name: str = Field("trader-sweep", min_length=1, description="Optuna study name.")
    n_trials: int = Field(100, gt=0, description="Trials to run (complete and pruned; failed ones re-run).")
    timeout_s: float | None = Field(None, gt=0, description="Wall-clock limit, seconds; null = none.")
    sampler: Literal["tpe", "random", "grid", "cmaes"] = Field("tpe", description="Optuna sampler.")
    pruner: Literal["median", "successive_halving", "none"] = Field("median", description="Optuna pruner.")
    pruner_startup_trials: int = Field(5, ge=0, description="Trials completed before any trial is pruned.")
    pruner_warmup_folds: int = Field(1, ge=0, description="Folds a trial runs before it may be pruned.")
    concurrency: int = Field(4, gt=0, description="Trials run at once.")
    seed: int | None = Field(None, description="Sampler seed; null = engine.rng_seed.")
    objectives: list[SweepObjective] = Field(
        default_factory=lambda: ["score"],
        min_length=1,
        max_length=2,
        description="score (the OOS composite score) alone, or a pair such as [sharpe, max_drawdown] "
        "(Pareto front); max_drawdown is minimised, the others maximised.",
    )
    space: dict[str, SweepParam] = Field(
        default_factory=dict,
        description="Swept settings by dotted key (e.g. composer.lookback, "
        "composer.strategies[0].params.fast); empty = every composer strategy's declared parameters.",
    )
    storage_url: SecretStr | None = Field(
        None,
        description="Optuna RDB URL for a study shared by several drivers (may embed a password); "
        "null = a journal file in the run directory.",
    )
    pbo_blocks: int = Field(16, ge=2, description="Blocks for PBO's combinatorially symmetric CV; even.")

    @field_validator("pbo_blocks")
    @classmethod
    def _even_blocks(cls, value: int) -> int:
        # CSCV splits the blocks into two equal halves.
        if value % 2:
            raise PydanticCustomError("trader_invalid", "must be even (CSCV splits blocks in halves)")
        return value

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("trader_invalid", "objectives must be distinct")
        return value


class RaySettings(BaseModel):
    """How to reach Ray (used only by the cluster layer)."""

    model_config = _MODEL_CONFIG

    address: str | None = Field(
        None, min_length=1, description="Cluster address; null = embedded local cluster."
    )
    dashboard_address: str | None = Field(
        None,
        min_length=1,
        description="Dashboard URL for `trader submit`, e.g. http://127.0.0.1:8265; null = ray.address.",
    )
    namespace: str = Field("trader", min_length=1, description="Ray namespace for named actors.")
    num_cpus: int | None = Field(None, gt=0, description="CPUs for the local cluster; null = all.")
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="Ray runtime_env for jobs and tasks."
    )
    auth_mode: Literal["disabled", "token"] = Field("disabled", description="Ray dashboard/job auth mode.")

    @field_validator("runtime_env")
    @classmethod
    def _no_credentials(cls, value: dict[str, Any]) -> dict[str, Any]:
        env_vars = value.get("env_vars") or {}
        if isinstance(env_vars, Mapping):
            for name in env_vars:
                if re.search(r"SECRET|PASSWORD|TOKEN|CREDENTIAL|ACCESS_KEY", str(name), re.IGNORECASE):
                    # Runtime envs travel to every worker and show in the dashboard.
                    raise _invalid(
                        f"env_vars.{name}",
                        "credentials must not travel in runtime_env; use the instance role or worker env",
                    )
        return value


class IbkrSettings(BaseModel):
    """Interactive Brokers connection and the execution actor that owns it."""

    model_config = _MODEL_CONFIG

    host: str = Field("127.0.0.1", min_length=1, description="TWS / IB Gateway host.")
    port: int = Field(
        4002, ge=1, le=65535, description="TWS / IB Gateway port (paper: 7497 TWS, 4002 Gateway)."
    )
    client_id: int = Field(1, ge=0, description="API client id, unique per connection.")
    account: str | None = Field(None, description="Account id; null = the gateway's only account.")
    client_library: Literal["ib_insync", "ib_async"] = Field(
        "ib_insync", description="Python client library."
    )
    paper_only: bool = Field(
        True, description="Refuse live ports (7496, 4001) and accounts not starting with DU."
    )
    journal: str | None = Field(
        None, description="Order journal (SQLite file); null = orders.sqlite in the session directory."
    )
    pacing_per_second: float = Field(
        40.0,
        gt=0,
        le=49,
        description="Messages per second sent to the gateway on average; bursts take the rest of its 50.",
    )
    connect_timeout_seconds: float = Field(10.0, gt=0, description="Seconds to wait for a connection.")
    reconnect_initial_seconds: float = Field(0.5, gt=0, description="First reconnection delay, seconds.")
    reconnect_max_seconds: float = Field(30.0, gt=0, description="Longest reconnection delay, seconds.")
    heartbeat_seconds: float = Field(
        10.0, gt=0, description="Seconds between heartbeats (a current-time request) to the gateway."
    )
    approval_max_age_seconds: float = Field(
        120.0, gt=0, description="Oldest risk approval the execution actor accepts, seconds."
    )
    approval_secret: SecretStr | None = Field(
        None,
        description="HMAC key shared by the risk and execution actors (secret); null = a random key per "
        "cluster session.",
    )

    @model_validator(mode="after")
    def _paper_port(self) -> IbkrSettings:
        if self.paper_only and self.port in LIVE_PORTS:
            raise _invalid(
                "port",
                "port {port} is a live trading port (7496 TWS, 4001 Gateway) while ibkr.paper_only is true; "
                "use a paper port (7497 or 4002) or set ibkr.paper_only=false to trade live",
                port=self.port,
            )
        if self.reconnect_initial_seconds > self.reconnect_max_seconds:
            raise _invalid(
                "reconnect_initial_seconds",
                "reconnect_initial_seconds ({a}) exceeds reconnect_max_seconds ({b})",
                a=self.reconnect_initial_seconds,
                b=self.reconnect_max_seconds,
            )
        return self


class GapFillerSettings(BaseModel):
    """Re-requesting bars missing from a live stream."""

    model_config = _MODEL_CONFIG

    max_retries: int = Field(3, ge=0, description="Re-requests per gap before reporting it.")
    retry_interval_seconds: float = Field(5.0, gt=0, description="Seconds between re-requests.")


class SessionSettings(BaseModel):
    """A live (paper) or replayed trading session."""

    model_config = _MODEL_CONFIG

    symbols: tuple[Symbol, ...] = Field((), description="Symbols traded.")
    streams: tuple[Interval, ...] = Field(("1m",), min_length=1, description="Bar intervals kept per symbol.")
    historical: int = Field(5, ge=0, description="Trading days of history loaded as warm-up.")
    gap_filler: GapFillerSettings = Field(default_factory=GapFillerSettings)
    speed_multiplier: float = Field(
        1.0, ge=0, description="Replay speed, x real time; 0 = as fast as possible."
    )
    prefetch_days: int = Field(1, ge=0, description="Trading days of bars prefetched ahead in replay.")
    symbols_per_actor: int | None = Field(
        None,
        gt=0,
        description="Symbols handled by one session actor; null = about two actors per cluster CPU "
        "(symbols / (2 x CPUs), rounded up).",
    )
    webhook_url: SecretStr | None = Field(None, description="Alert webhook URL (secret); null = no alerts.")

    @model_validator(mode="after")
    def _unique(self) -> SessionSettings:
        _check_unique(self.symbols, "symbols")
        _check_unique(self.streams, "streams")
        return self


class TickerSpec(BaseModel):
    """What a symbol is and where it trades."""

    model_config = _MODEL_CONFIG

    asset_class: Literal["equity", "etf", "crypto"] = Field(description="Asset class.")
    exchange: str = Field(min_length=1, description="Listing / routing exchange, e.g. NASDAQ, ARCA, SMART.")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code, e.g. USD.")


class SynthSettings(BaseModel):
    """The synthetic dataset a config names (generated by trader.data.synth)."""

    model_config = _MODEL_CONFIG

    n_symbols: int | None = Field(10, gt=0, description="Number of generated symbols (or give symbols).")
    symbols: tuple[Symbol, ...] | None = Field(
        None, description="Explicit symbol names; set n_symbols to null."
    )
    start: dt.date = Field(dt.date(2020, 1, 1), description="First calendar date (inclusive).")
    end: dt.date = Field(dt.date(2024, 12, 31), description="Last calendar date (inclusive).")
    intervals: tuple[Interval, ...] = Field(("1d",), min_length=1, description="Bar intervals generated.")
    seed: int = Field(0, ge=0, description="Generator seed.")

    @model_validator(mode="after")
    def _consistent(self) -> SynthSettings:
        if self.symbols is None and self.n_symbols is None:
            raise _invalid("n_symbols", "give synth.n_symbols or synth.symbols")
        if self.symbols is not None:
            if not self.symbols:
                raise _invalid("symbols", "empty list; give at least one symbol or use n_symbols")
            _check_unique(self.symbols, "symbols")
            if self.n_symbols is not None and self.n_symbols != len(self.symbols):
                raise _invalid(
                    "n_symbols",
                    "n_symbols is {n} but {m} symbols are listed; set synth.n_symbols to null",
                    n=self.n_symbols,
                    m=len(self.symbols),
                )
        _check_unique(self.intervals, "intervals")
        if self.end <= self.start:
            raise _invalid(
                "end", "end ({end}) must be after start ({start})", end=str(self.end), start=str(self.start)
            )
        return self

    @property
    def symbol_count(self) -> int:
        """Number of symbols in the dataset."""
        return len(self.symbols) if self.symbols is not None else int(self.n_symbols or 0)


class Settings(BaseSettings):
    """Every setting of the project, validated and frozen. Build it with :func:`load_settings`.

    ``Settings()`` is the model defaults alone: all layering (files, environment, ``--set``) happens in
    :func:`load_settings`, so that each value is validated once and its source is known.
    """

    model_config = SettingsConfigDict(**_MODEL_CONFIG)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Logging level.")
    engine: EngineSettings = Field(default_factory=EngineSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    walkforward: WalkForwardSettings = Field(default_factory=WalkForwardSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    costs: CostsSettings = Field(default_factory=CostsSettings)
    composer: ComposerSettings = Field(default_factory=ComposerSettings)
    bandit: BanditSettings = Field(default_factory=BanditSettings)
    sweep: SweepSettings = Field(default_factory=SweepSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    ibkr: IbkrSettings = Field(default_factory=IbkrSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    tickers: dict[str, TickerSpec] = Field(default_factory=dict, description="Symbol -> what it is.")
    synth: SynthSettings = Field(default_factory=SynthSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only explicit values: the environment is read by load_settings, which tracks where values came from.
        return (init_settings,)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


# -- YAML -------------------------------------------------------------------------------------------------

_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars and duplicate keys refused."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key_node.value!r} (first on line {seen[key_node.value]})",
                        key_node.start_mark,
                    )
                seen[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0x", "0o")):
        return int(text[2:], 16 if text[1] == "x" else 8)
    return int(text, 10)  # "010" is ten, not YAML 1.1's octal eight


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    return float("nan") if text == ".nan" else float(text)


def _construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"


def _construct_timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError as exc:  # e.g. 2024-02-30: report it with its line like any YAML error
        raise yaml.constructor.ConstructorError(
            None, None, f"invalid date {node.value!r} ({exc})", node.start_mark
        ) from None


_Loader.add_constructor(_INT_TAG, _construct_int)
_Loader.add_constructor(_FLOAT_TAG, _construct_float)
_Loader.add_constructor(_BOOL_TAG, _construct_bool)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def _yaml_error(where: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc).splitlines()[0]
    if mark is None:
        return ConfigError(f"{where}: invalid YAML: {problem}")
    return ConfigError(
        f"{where}:{mark.line + 1}: invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    )


KeyPath = tuple[str | int, ...]


def _node_lines(node: yaml.Node | None, prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, int]]:
    """(key path, 1-based line) for every key and list item under ``node``."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                path = (*prefix, key_node.value)
                yield path, key_node.start_mark.line + 1
                yield from _node_lines(value_node, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield (*prefix, i), item.start_mark.line + 1
            yield from _node_lines(item, (*prefix, i))


def _read_yaml_file(path: Path, where: str) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    """The top-level mapping of a YAML file and the line of each key. An empty file is an empty mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file not found: {where} (check the path and the working directory)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a YAML file: {where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {where}: {exc}") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise _yaml_error(where, exc) from None
    finally:
        loader.dispose()
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        kind = "list" if isinstance(data, list) else type(data).__name__
        raise ConfigError(
            f"{where}: the top level must be a mapping of sections (e.g. 'risk:'), not a {kind}"
        )
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: top-level key {key!r} is not a section name")
    return data, dict(_node_lines(node))


def _parse_value(text: str, where: str) -> Any:
    """A command-line or environment value read as a YAML scalar or flow collection ("" is null)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid value {text!r}: {problem} (quote it or fix the YAML)") from None
    finally:
        loader.dispose()


def dotted_key(loc: Sequence[str | int]) -> str:
    """('composer', 'strategies', 0, 'name') -> 'composer.strategies[0].name'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_SEGMENT = re.compile(r"[^.\[\]]+")
_dotted = dotted_key


def parse_key_path(text: str, where: str = "key") -> KeyPath:
    """``"composer.strategies[0].params.fast"`` -> ``("composer", "strategies", 0, "params", "fast")``: the
    key syntax of ``--set`` and :func:`with_overrides`. ConfigError naming ``where`` when malformed.

    >>> parse_key_path("risk.max_drawdown")
    ('risk', 'max_drawdown')
    """
    return _parse_key_path(text, where)


def _parse_key_path(text: str, where: str, *, relative: bool = False) -> KeyPath:
    """'composer.strategies[0].params.fast' -> ('composer', 'strategies', 0, 'params', 'fast').

    ``relative`` paths may start with an index ('[0].name').
    """
    bad = ConfigError(f"{where}: bad key path {text!r}; use dotted keys such as risk.max_drawdown")
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "[":
            end = text.find("]", pos)
            if end < 0 or not re.fullmatch(r"-?\d+", text[pos + 1 : end]) or not (parts or relative):
                raise bad
            parts.append(int(text[pos + 1 : end]))
            pos = end + 1
            continue
        if parts:
            if text[pos] != ".":
                raise bad
            pos += 1
        match = _SEGMENT.match(text, pos)
        if match is None:
            raise bad
        parts.append(match.group(0))
        pos = match.end()
    if not parts:
        raise bad
    return tuple(parts)


# -- layers and sources -----------------------------------------------------------------------------------


def _key_paths(value: Any, prefix: KeyPath) -> Iterator[KeyPath]:
    """``prefix`` and the path of every key and list item inside ``value``."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _key_paths(item, (*prefix, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _key_paths(item, (*prefix, i))


class _Layers:
    """The merged raw settings and, for every key path, the source that set it last ('file:line', 'env X')."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.sources: dict[KeyPath, str] = {}

    def merge(
        self, update: Mapping[str, Any], source: str, lines: Mapping[KeyPath, int] | None = None
    ) -> None:
        """Deep-merge ``update`` (mappings merge; lists and scalars replace)."""
        self.data = self._merge(self.data, update, (), source, lines or {})

    def _merge(
        self,
        base: dict[str, Any],
        update: Mapping[str, Any],
        prefix: KeyPath,
        source: str,
        lines: Mapping[KeyPath, int],
    ) -> dict[str, Any]:
        merged = dict(base)
        for key, value in update.items():
            path = (*prefix, key)
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merged[key] = self._merge(base[key], value, path, source, lines)
                self.sources[path] = self._label(source, lines, path)
            else:
                merged[key] = value
                self._replace_sources(path, value, source, lines)
        return merged

    @staticmethod
    def _label(source: str, lines: Mapping[KeyPath, int], path: KeyPath) -> str:
        return f"{source}:{lines[path]}" if path in lines else source

    def _replace_sources(self, path: KeyPath, value: Any, source: str, lines: Mapping[KeyPath, int]) -> None:
        for stale in [p for p in self.sources if p[: len(path)] == path]:
            del self.sources[stale]
        for sub in _key_paths(value, path):
            self.sources[sub] = self._label(source, lines, sub)

    def set_path(self, path: KeyPath, value: Any, source: str) -> None:
        """Set one key path (env or --set). Mappings merge deeply; an index must exist in its list."""
        if not any(isinstance(p, int) for p in path):
            nested: Any = value
            for key in reversed(path):
                nested = {key: nested}
            self.merge(nested, source)
            return
        self.data = self._replace_at(self.data, path, value, source, ())
        self._replace_sources(path, value, source, {})

    def _replace_at(self, node: Any, path: KeyPath, value: Any, source: str, done: KeyPath) -> Any:
        if not path:
            return value
        head, rest = path[0], path[1:]
        if isinstance(head, int):
            size = len(node) if isinstance(node, list | tuple) else 0
            if not -size <= head < size:
                raise ConfigError(
                    f"{source}: {_dotted((*done, head))} does not exist (the list has {size} entries); "
                    "set the whole list instead"
                )
            items = list(node)
            items[head] = self._replace_at(items[head], rest, value, source, (*done, head))
            return items
        mapping = dict(node) if isinstance(node, dict) else {}
        mapping[head] = self._replace_at(mapping.get(head), rest, value, source, (*done, head))
        return mapping

    def source_of(self, loc: KeyPath) -> str:
        """The source of ``loc`` or of its nearest recorded parent; 'defaults' when no layer set it."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.sources:
                return self.sources[loc[:end]]
        return "defaults"


# -- environment ------------------------------------------------------------------------------------------

# Established variable names -> (key path, percent: the value is divided by 100 because the name says PCT).
ENV_ALIASES: Mapping[str, tuple[KeyPath, bool]] = {
    "IBKR_HOST": (("ibkr", "host"), False),
    "IBKR_PORT": (("ibkr", "port"), False),
    "IBKR_CLIENT_ID": (("ibkr", "client_id"), False),
    "IBKR_PAPER_TRADING": (("ibkr", "paper_only"), False),
    "MAX_POSITION_PCT": (("risk", "max_position_pct"), True),  # 10 -> 0.10
    "MAX_GROSS_LEVERAGE": (("risk", "max_gross_leverage"), False),
    "DAILY_LOSS_CUT_PCT": (("risk", "daily_loss_limit"), True),  # 2 -> 0.02
    "LOG_LEVEL": (("log_level",), False),
}


def _percent(name: str, text: str) -> float:
    """A percent variable as a fraction: '10' or '10%' -> 0.10."""
    try:
        return float(text.strip().removesuffix("%")) / 100.0
    except ValueError:
        raise ConfigError(
            f"env {name}={text!r} is not a number; give a percent such as 10 (meaning 0.10)"
        ) from None


def _env_key_path(name: str) -> KeyPath:
    """TRADER_RISK__MAX_DRAWDOWN -> ('risk', 'max_drawdown').

    Field names are lowercased; keys of free mappings (tickers' symbols, strategy params) keep their case.
    """
    parts = name[len(ENV_PREFIX) :].split("__")
    if not all(parts):
        raise ConfigError(
            f"env {name}: empty key segment; use {ENV_PREFIX}SECTION__KEY, e.g. TRADER_RISK__MAX_DRAWDOWN"
        )
    path: list[str | int] = []
    tp: Any = Settings
    for part in parts:
        key = part.lower() if _model_class(tp) is not None else part
        path.append(key)
        tp = _child_type(tp, key)
    return tuple(path)


def _apply_env(layers: _Layers, env: Mapping[str, str]) -> None:
    for name in sorted(n for n in env if n in ENV_ALIASES):
        path, is_percent = ENV_ALIASES[name]
        source = f"env {name} (percent, divided by 100)" if is_percent else f"env {name}"
        value = _percent(name, env[name]) if is_percent else _parse_value(env[name], f"env {name}")
        layers.set_path(path, value, source)
    # The project's own names come last so that they win over the established ones.
    for name in sorted(n for n in env if n.startswith(ENV_PREFIX)):
        layers.set_path(_env_key_path(name), _parse_value(env[name], f"env {name}"), f"env {name}")


def _apply_overrides(layers: _Layers, overrides: Sequence[str]) -> None:
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. --set risk.max_drawdown=0.15")
        where = f"--set {key}"
        layers.set_path(_parse_key_path(key, where), _parse_value(text, where), where)


# -- profiles ---------------------------------------------------------------------------------------------


def available_profiles(directory: str | Path = "configs") -> list[str]:
    """Risk profile names that have a ``risk_<name>.yaml`` overlay in ``directory``, sorted."""
    return sorted(p.name[len("risk_") : -len(".yaml")] for p in Path(directory).glob("risk_*.yaml"))


def _profile_path(profile: str, files: Sequence[Path]) -> Path:
    directory = files[0].parent if files else Path("configs")
    candidate = directory / f"risk_{profile}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", profile) or not candidate.is_file():
        names = ", ".join(available_profiles(directory)) or "none"
        raise ConfigError(f"unknown risk profile {profile!r}; available in {directory}: {names}")
    return candidate


# -- type introspection for messages ----------------------------------------------------------------------


def _unwrap(tp: Any) -> tuple[Any, list[Any], bool]:
    """Strip Annotated and Optional: (inner type, constraint metadata, whether null is allowed)."""
    meta: list[Any] = []
    nullable = False
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp, *extra = typing.get_args(tp)
            for item in extra:
                meta.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            nullable = nullable or len(args) < len(typing.get_args(tp))
            if len(args) != 1:
                return tp, meta, nullable
            tp = args[0]
        else:
            return tp, meta, nullable


def _model_class(tp: Any) -> type[BaseModel] | None:
    inner = _unwrap(tp)[0]
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def _child_type(tp: Any, key: str | int) -> Any:
    """The declared type at ``key`` inside a value of type ``tp``; None when there is none."""
    model = _model_class(tp)
    if model is not None:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        return None if field is None else Annotated[field.annotation, field]
    inner = _unwrap(tp)[0]
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin in (list, tuple) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _type_at(loc: KeyPath) -> Any:
    tp: Any = Settings
    for key in loc:
        tp = _child_type(tp, key)
        if tp is None:
            return None
    return tp


_TYPE_WORDS: dict[Any, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "text",
    dt.date: "a date (YYYY-MM-DD)",
    SecretStr: "text (secret)",
}


def _describe(tp: Any) -> str:
    """What a value of declared type ``tp`` may be, in words, with its bounds."""
    if tp is None:
        return "see the field's description"
    inner, meta, nullable = _unwrap(tp)
    origin = typing.get_origin(inner)
    if origin is Literal:
        text = "one of " + ", ".join(repr(a) for a in typing.get_args(inner))
    elif (model := _model_class(inner)) is not None:
        text = "a mapping with keys " + ", ".join(model.model_fields)
    elif origin in (list, tuple):
        text = f"a list of {_describe(typing.get_args(inner)[0])}"
    elif origin is dict:
        text = "a mapping"
    else:
        text = _TYPE_WORDS.get(inner, getattr(inner, "__name__", str(inner)))
    lower = [
        (op, getattr(m, attr)) for m in meta for attr, op in (("gt", "<"), ("ge", "<=")) if hasattr(m, attr)
    ]
    upper = [
        (op, getattr(m, attr)) for m in meta for attr, op in (("lt", "<"), ("le", "<=")) if hasattr(m, attr)
    ]
    if lower and upper:
        text += f" with {lower[0][1]} {lower[0][0]} value {upper[0][0]} {upper[0][1]}"
    elif lower:
        text += f" {lower[0][0].replace('<', '>')} {lower[0][1]}"
    elif upper:
        text += f" {upper[0][0]} {upper[0][1]}"
    for m in meta:
        if getattr(m, "min_length", None):
            if m.min_length > 1:
                text += f" of length >= {m.min_length}"
            else:
                text = "a non-empty " + text[2:] if text.startswith("a ") else f"non-empty {text}"
        if getattr(m, "pattern", None):
            text += f" matching {m.pattern}"
    return text + (" or null" if nullable else "")


# -- validation errors ------------------------------------------------------------------------------------


def _lookup(data: Any, loc: KeyPath) -> tuple[bool, Any]:
    for key in loc:
        in_mapping = isinstance(data, dict) and key in data
        in_list = isinstance(data, list | tuple) and isinstance(key, int) and -len(data) <= key < len(data)
        if not (in_mapping or in_list):
            return False, None
        data = data[key]
    return True, data


def _shown(value: Any, tp: Any) -> str:
    """A value for a message: secrets masked, long values cut."""
    if _unwrap(tp)[0] is SecretStr or isinstance(value, SecretStr):
        return SECRET_MASK
    text = repr(value.isoformat() if isinstance(value, dt.date) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(loc: KeyPath) -> str:
    """'did you mean risk.max_drawdown?' for the closest valid key, else the list of valid keys."""
    parent = _model_class(_type_at(loc[:-1]))
    if parent is None:
        return "remove it"
    names = list(parent.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    if close:
        return f"did you mean {_dotted((*loc[:-1], close[0]))}?"
    where = f"under {_dotted(loc[:-1])}" if loc[:-1] else "at the top level"
    return f"valid keys {where}: {', '.join(names)}"


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_LENGTH_ERRORS = {"too_short", "too_long", "string_too_short", "string_too_long"}
_TYPE_ERRORS = {"int_from_float", "date_from_datetime_inexact", "model_attributes_type", "is_instance_of"}


def _error_line(err: Mapping[str, Any], layers: _Layers) -> str:
    """One pydantic error as 'source: dotted.key=value problem (allowed: ...)'."""
    loc: KeyPath = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    if ctx.get("key"):  # our validators pin their error to a key below the model that raised it
        # An odd mapping key (e.g. with brackets) cannot be parsed: report at the model instead.
        with contextlib.suppress(ConfigError):
            loc += _parse_key_path(str(ctx["key"]), "validator", relative=True)
    source, key, kind = layers.source_of(loc), _dotted(loc), err["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key {key} ({_suggest(loc)})"
    tp = _type_at(loc)
    if kind == "missing":
        return f"{source}: {key} is missing (required: {_describe(tp)})"
    found, value = _lookup(layers.data, loc)
    given = f"{key}={_shown(value, tp)}" if found else key
    if kind == "trader_invalid":
        return f"{source}: {given}: {err['msg']}"
    if kind in _RANGE_ERRORS:
        return f"{source}: {given} is out of range (allowed: {_describe(tp)})"
    if kind in _LENGTH_ERRORS:
        return f"{source}: {given} is too {kind.rsplit('_', 1)[1]} (allowed: {_describe(tp)})"
    if kind == "finite_number":
        return f"{source}: {given} is not a finite number (allowed: {_describe(tp)})"
    if kind == "literal_error":
        return f"{source}: {given} is not allowed (allowed: {_describe(tp)})"
    if kind.endswith(("_type", "_parsing")) or kind in _TYPE_ERRORS:
        return f"{source}: {given} has the wrong type (allowed: {_describe(tp)})"
    message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{source}: {given} is invalid: {message} (allowed: {_describe(tp)})"


def _validation_error(exc: ValidationError, layers: _Layers) -> ConfigError:
    # An unknown key usually explains the other errors (a misspelt required key is also "missing").
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    lines = [_error_line(err, layers) for err in errors]
    more = len(lines) - 1
    return ConfigError(lines[0] + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""))


def _reject_masked_secrets(settings: Settings) -> None:
    """Refuse the mask itself as a secret: it means 'config show' output was fed back in."""
    for loc, secret in (
        (("sweep", "storage_url"), settings.sweep.storage_url),
        (("session", "webhook_url"), settings.session.webhook_url),
        (("ibkr", "approval_secret"), settings.ibkr.approval_secret),
    ):
        if secret is not None and secret.get_secret_value() == SECRET_MASK:
            env_name = ENV_PREFIX + "__".join(str(p).upper() for p in loc)
            raise ConfigError(
                f"{_dotted(loc)} is the mask {SECRET_MASK} (copied from 'config show'?); "
                f"give the real value, e.g. in env {env_name}"
            )


# -- public API -------------------------------------------------------------------------------------------


def load_settings(
    paths: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    *,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, YAML files, a risk profile, the environment and ``--set`` overrides; validate once.

    ``paths`` are YAML files applied in order. ``profile`` (e.g. ``"strict"``) inserts ``risk_<profile>.yaml``
    from the first file's directory (or ``./configs`` when no file is given) right after the first file.
    ``env`` defaults to ``os.environ``: ``TRADER_SECTION__KEY`` variables and the names in
    :data:`ENV_ALIASES` are read from it (``*_PCT`` names are percent: ``MAX_POSITION_PCT=10`` sets
    ``risk.max_position_pct=0.10``). ``overrides`` are ``key.path=value`` strings, the value read as YAML;
    they win over everything.

    Raises ConfigError: one line naming the file (and line), variable or --set, the dotted key, the value
    and what is allowed.

    >>> load_settings(["configs/base.yaml"], ["risk.max_drawdown=0.15"], env={}).risk.max_drawdown
    0.15
    """
    # A lone path or override is a common slip: iterating a str would read it character by character.
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    overrides = [overrides] if isinstance(overrides, str) else list(overrides)
    ordered: list[tuple[Path, bool]] = [(p, False) for p in files]
    if profile is not None:
        ordered.insert(1 if files else 0, (_profile_path(profile, files), True))
    layers = _Layers()
    for path, is_profile in ordered:
        data, lines = _read_yaml_file(path, str(path))
        if is_profile and set(data) - {"risk"}:
            others = ", ".join(sorted(set(data) - {"risk"}))
            raise ConfigError(f"{path}: a risk profile may only set the risk section (found: {others})")
        layers.merge(data, str(path), lines)
    _apply_env(layers, os.environ if env is None else env)
    _apply_overrides(layers, overrides)
    try:
        settings = Settings.model_validate(layers.data)
    except ValidationError as exc:
        raise _validation_error(exc, layers) from None
    _reject_masked_secrets(settings)
    return settings


def with_overrides(settings: Settings, overrides: Mapping[str, Any], *, source: str = "override") -> Settings:
    """A validated copy of ``settings`` with dotted ``key.path`` values replaced (a sweep trial's settings).

    Keys are as for ``--set`` (``composer.strategies[0].params.fast``); values are Python values, not YAML
    text. Raises ConfigError naming ``source`` and the key, as :func:`load_settings` does.

    >>> s = load_settings([], env={})
    >>> with_overrides(s, {"risk.max_drawdown": 0.15}).risk.max_drawdown
    0.15
    """
    layers = _Layers()
    layers.merge(_plain(settings), "settings")
    for key, value in overrides.items():
        where = f"{source} {key}"
        layers.set_path(_parse_key_path(key, where), value, where)
    try:
        out = Settings.model_validate(layers.data)
    except ValidationError as exc:
        raise _validation_error(exc, layers) from None
    _reject_masked_secrets(out)
    return out


def _plain(settings: Settings) -> dict[str, Any]:
    """The settings as plain Python data with the real secret values (not the mask)."""
    data = settings.model_dump(mode="python")

    def unwrap(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {k: unwrap(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [unwrap(v) for v in value]
        return value

    return unwrap(data)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes every string our YAML 1.2 loader would read as something else (e.g. '1e3')."""


_Dumper.yaml_implicit_resolvers = {k: list(v) for k, v in _Loader.yaml_implicit_resolvers.items()}


def render_settings(settings: Settings) -> str:
    """The merged settings as YAML, loadable again; every secret shows as ``**********``."""
    # JSON mode turns SecretStr into the mask, tuples into lists and dates into ISO strings.
    return yaml.dump(
        settings.model_dump(mode="json"), Dumper=_Dumper, sort_keys=False, default_flow_style=False
    )
