"""Pure risk rules, the same ones for the simulator and for live orders.

Two layers:

* numba kernels (``@njit(cache=True)``) over plain floats and 1-D float64 arrays: the simulator's kernel
  calls them bar by bar, and Python can call them directly too (the live risk actor does, through the
  helpers below). They never allocate more than a scratch array and never look at anything but their
  arguments.
* Python helpers for live trading: :class:`RiskLimits` (frozen, built from
  :class:`trader.config.RiskSettings`), :class:`RiskState` with :func:`update_risk_state` (session loss and
  drawdown bookkeeping, as the simulator does it at each bar's close) and :func:`approve_order` (one proposed
  order against the limits, given current positions and equity).

Units: weights are signed fractions of equity (0.1 = 10 % long, -0.1 = 10 % short); volatilities are
annualised fractions (0.2 = 20 %/year); notionals are account currency; loss limits are fractions of equity.

Rules and their names (:data:`RULES`; each name is the :class:`~trader.config.RiskSettings` field that
governs it). Limits that shape target weights are applied at the decision (bar t's close) in this order:

1. ``stop_loss_pct`` - a position whose close has moved ``stop_loss_pct`` against its average entry price
   (long: ``close <= entry * (1 - pct)``; short: ``close >= entry * (1 + pct)``) is exited at the next open.
   Closes only, not intrabar lows: the simulator sees open and close. The symbol then stays flat until the
   raw signal goes flat or reverses (so a constant signal does not buy straight back in).
2. ``vol_target`` - with ``pos_size_method="vol_target"`` all weights are scaled by one factor so that the
   ex-ante annualised portfolio volatility ``sqrt(sum_j (w_j * vol_j)**2)`` equals ``vol_target``.
   Correlations are ignored (a diagonal covariance): for positively correlated symbols the real volatility
   is higher than the target; ``sum_j |w_j| * vol_j`` would be the worst-case bound. A symbol whose trailing
   volatility is unknown (NaN: too little history) or zero cannot be sized and gets weight 0.
3. ``max_position_pct`` - ``|w_j|`` is capped per symbol. With fixed sizing a unit signal (``w = +-1``) thus
   becomes a position of exactly ``max_position_pct`` of equity.
4. ``max_open_positions`` - only the largest ``|w_j|`` are kept; ties go to the lower symbol index.
5. ``max_gross_leverage`` - ``sum_j |w_j|`` above the cap scales every weight down by the same factor.
6. ``max_buying_power`` - gross notional ``sum_j |w_j| * equity`` above the cap scales every weight down.

At the fill (the next bar's open) the notional caps apply, valued at that open: ``max_per_symbol`` caps the
position's notional, ``max_per_trade`` caps one trade's notional (the rest follows on later bars).

Account-level rules are checked on each bar's close equity: ``daily_loss_limit`` (equity below the
session's starting equity - the previous session's last close, or the initial cash - by more than the
fraction: flatten and refuse new entries until the next session) and ``max_drawdown`` (equity below its
running peak by more than the fraction: flatten and refuse new entries for the rest of the run).

Example::

    import numpy as np
    from trader.risk import RiskLimits, approve_order, vol_target_scale

    w = np.array([0.5, 0.5]); vol = np.array([0.2, 0.4])
    scale = vol_target_scale(w, vol, 0.10)      # w is scaled in place; scale == 0.10 / sqrt(0.1**2 + 0.2**2)
    limits = RiskLimits(max_per_trade=10_000.0, max_position_pct=0.1)
    approve_order("SPY", 100, 450.0, positions={}, prices={}, equity=100_000.0, limits=limits).rule
    # -> "max_per_trade": 45,000 of notional in one order
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import numpy as np
from numba import njit

from trader.errors import ConfigError

__all__ = [
    "CAP_TOLERANCE",
    "N_RULES",
    "RULES",
    "RULE_DAILY_LOSS",
    "RULE_MAX_BUYING_POWER",
    "RULE_MAX_DRAWDOWN",
    "RULE_MAX_GROSS_LEVERAGE",
    "RULE_MAX_OPEN_POSITIONS",
    "RULE_MAX_PER_SYMBOL",
    "RULE_MAX_PER_TRADE",
    "RULE_MAX_POSITION",
    "RULE_STOP_LOSS",
    "RULE_VOL_TARGET",
    "OrderDecision",
    "RiskEvent",
    "RiskLimits",
    "RiskState",
    "approve_order",
    "cap_abs",
    "daily_loss_hit",
    "drawdown_hit",
    "gross_exposure",
    "keep_largest",
    "stop_hit",
    "trailing_vol",
    "update_risk_state",
    "vol_target_scale",
]

# Rule codes: small ints so that the numba kernel can record them; RULES[code] is the name.
RULE_VOL_TARGET: Final = 0
RULE_MAX_POSITION: Final = 1
RULE_MAX_OPEN_POSITIONS: Final = 2
RULE_MAX_GROSS_LEVERAGE: Final = 3
RULE_MAX_BUYING_POWER: Final = 4
RULE_MAX_PER_TRADE: Final = 5
RULE_MAX_PER_SYMBOL: Final = 6
RULE_STOP_LOSS: Final = 7
RULE_DAILY_LOSS: Final = 8
RULE_MAX_DRAWDOWN: Final = 9
RULES: Final = (
    "vol_target",
    "max_position_pct",
    "max_open_positions",
    "max_gross_leverage",
    "max_buying_power",
    "max_per_trade",
    "max_per_symbol",
    "stop_loss_pct",
    "daily_loss_limit",
    "max_drawdown",
)
N_RULES: Final = len(RULES)
# A cap compared with a computed value binds only beyond cap * (1 + CAP_TOLERANCE), so a value equal to the
# cap up to rounding (e.g. 0.1 * 3 / 3) does not count as a breach. The simulator uses the same tolerance.
CAP_TOLERANCE: Final = 1e-9


# -- kernels (callable from the simulator's kernel and from Python) -------------------------------------


@njit(cache=True)
def cap_abs(value: float, cap: float) -> float:
    """``value`` with its magnitude limited to ``cap`` (>= 0), sign kept.

    >>> cap_abs(-0.25, 0.1)
    -0.1
    """
    if value > cap:
        return cap
    if value < -cap:
        return -cap
    return value


@njit(cache=True)
def gross_exposure(weights: np.ndarray) -> float:
    """``sum |w_j|``: gross exposure as a multiple of equity (1.0 = 100 %).

    >>> gross_exposure(np.array([0.5, -0.25]))
    0.75
    """
    total = 0.0
    for x in weights:
        total += abs(x)
    return total


@njit(cache=True)
def vol_target_scale(weights: np.ndarray, vol: np.ndarray, vol_target: float) -> float:
    """Scale ``weights`` in place so that ``sqrt(sum (w_j * vol_j)**2) == vol_target``; return the factor.

    ``vol`` holds each symbol's trailing annualised volatility (fraction), computed from rows <= the decision
    bar; ``vol_target`` is annualised too. Correlations are ignored (diagonal covariance). A non-zero weight
    whose volatility is NaN or <= 0 is set to 0 (it cannot be sized). Returns NaN, leaving all weights 0,
    when nothing could be sized.

    >>> w = np.array([1.0])
    >>> vol_target_scale(w, np.array([0.2]), 0.1), w.tolist()
    (0.5, [0.5])
    """
    total = 0.0
    for j in range(weights.shape[0]):
        x = weights[j]
        if x == 0.0:
            continue
        v = vol[j]
        if not (v > 0.0 and v < np.inf):
            weights[j] = 0.0
            continue
        total += (x * v) * (x * v)
    if total <= 0.0:
        return np.nan
    scale = vol_target / math.sqrt(total)
    for j in range(weights.shape[0]):
        weights[j] *= scale
    return scale


@njit(cache=True)
def keep_largest(weights: np.ndarray, max_count: int, dropped: np.ndarray) -> int:
    """Mark in ``dropped`` the non-zero weights beyond the ``max_count`` largest ``|w|``; return how many.

    Ties in ``|w|`` keep the lower index (a stable sort), so the choice is deterministic. ``weights`` is not
    changed; ``dropped`` (bool, same length) is overwritten.

    >>> d = np.zeros(3, np.bool_); keep_largest(np.array([0.1, -0.3, 0.1]), 2, d), d.tolist()
    (1, [False, False, True])
    """
    n = weights.shape[0]
    count = 0
    for j in range(n):
        dropped[j] = False
        if weights[j] != 0.0:
            count += 1
    if count <= max_count:
        return 0
    order = np.argsort(-np.abs(weights), kind="mergesort")
    kept = 0
    for k in range(n):
        j = order[k]
        if weights[j] == 0.0:
            continue
        if kept < max_count:
            kept += 1
        else:
            dropped[j] = True
    return count - max_count


@njit(cache=True)
def stop_hit(position: float, entry_price: float, price: float, stop_loss_pct: float) -> bool:
    """True when ``price`` has moved ``stop_loss_pct`` (fraction) against a position from ``entry_price``.

    Long (``position > 0``): ``price <= entry * (1 - pct)``; short: ``price >= entry * (1 + pct)``.
    A flat position or a NaN price never hits.

    >>> stop_hit(10.0, 100.0, 94.9, 0.05), stop_hit(-10.0, 100.0, 105.0, 0.05)
    (True, True)
    """
    if position > 0.0:
        return price <= entry_price * (1.0 - stop_loss_pct)
    if position < 0.0:
        return price >= entry_price * (1.0 + stop_loss_pct)
    return False


@njit(cache=True)
def daily_loss_hit(equity: float, session_start_equity: float, daily_loss_limit: float) -> bool:
    """True when ``equity`` is more than ``daily_loss_limit`` (fraction) below the session's starting equity.

    >>> daily_loss_hit(96_900.0, 100_000.0, 0.03), daily_loss_hit(97_000.0, 100_000.0, 0.03)
    (True, False)
    """
    return equity < session_start_equity * (1.0 - daily_loss_limit)


@njit(cache=True)
def drawdown_hit(equity: float, peak_equity: float, max_drawdown: float) -> bool:
    """True when ``equity`` is more than ``max_drawdown`` (fraction) below its running peak.

    >>> drawdown_hit(79_000.0, 100_000.0, 0.2)
    True
    """
    return equity < peak_equity * (1.0 - max_drawdown)


@njit(cache=True)
def trailing_vol(close: np.ndarray, lookback: int, periods_per_year: float) -> np.ndarray:
    """Trailing annualised volatility (fraction) of log close-to-close returns, per bar and symbol.

    ``close`` is bars x symbols. Row t uses the ``lookback`` returns ending at bar t (closes t-lookback..t),
    so it only sees rows <= t; sample standard deviation (ddof=1) times ``sqrt(periods_per_year)`` (252 for
    daily bars). NaN until ``lookback`` returns exist, and NaN wherever the window holds a missing close.

    >>> round(float(trailing_vol(np.array([[100.0], [101.0], [100.0]]), 2, 252.0)[2, 0]), 4)
    0.2234
    """
    n_bars, n_symbols = close.shape
    out = np.full((n_bars, n_symbols), np.nan)
    if lookback < 2:
        return out
    annual = math.sqrt(periods_per_year)
    rets = np.empty(lookback)
    for j in range(n_symbols):
        for t in range(lookback, n_bars):
            ok = True
            mean = 0.0
            for k in range(lookback):
                a = close[t - lookback + k, j]
                b = close[t - lookback + k + 1, j]
                if not (a > 0.0 and b > 0.0):
                    ok = False
                    break
                rets[k] = math.log(b / a)
                mean += rets[k]
            if not ok:
                continue
            mean /= lookback
            ss = 0.0
            for k in range(lookback):
                d = rets[k] - mean
                ss += d * d
            out[t, j] = math.sqrt(ss / (lookback - 1)) * annual
    return out


# -- Python level ---------------------------------------------------------------------------------------


def _check_positive(name: str, value: float | None, upper: float | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"risk limit {name}={value!r} is not a finite number; give a positive number")
    if value <= 0 or (upper is not None and value > upper):
        allowed = f"0 < value <= {upper}" if upper is not None else "> 0"
        raise ConfigError(f"risk limit {name}={value!r} is out of range (allowed: {allowed}; None = off)")


@dataclass(frozen=True)
class RiskLimits:
    """The limits the simulator and the live risk actor enforce. ``None`` switches a rule off.

    Fractions are of equity (0.1 = 10 %), ``vol_target`` is annualised, notionals are account currency.
    ``vol_lookback`` (bars) and ``periods_per_year`` (252 for daily bars, 252 * 390 for 1-minute bars)
    define the trailing volatility the simulator computes when none is given. Build it from settings with
    :meth:`from_settings`; the default is no limits at all.

    >>> RiskLimits(max_position_pct=0.1, max_drawdown=0.2).active
    True
    """

    pos_size_method: Literal["fixed", "vol_target"] = "fixed"
    vol_target: float | None = None
    max_position_pct: float | None = None
    max_open_positions: int | None = None
    max_gross_leverage: float | None = None
    max_buying_power: float | None = None
    max_per_trade: float | None = None
    max_per_symbol: float | None = None
    stop_loss_pct: float | None = None
    daily_loss_limit: float | None = None
    max_drawdown: float | None = None
    vol_lookback: int = 20
    periods_per_year: float = 252.0

    def __post_init__(self) -> None:
        if self.pos_size_method not in ("fixed", "vol_target"):
            raise ConfigError(
                f"risk limit pos_size_method={self.pos_size_method!r} is not allowed "
                "(allowed: 'fixed', 'vol_target')"
            )
        if self.pos_size_method == "vol_target" and self.vol_target is None:
            raise ConfigError("risk limit pos_size_method='vol_target' needs vol_target (e.g. 0.10)")
        for name in ("vol_target", "max_position_pct", "stop_loss_pct", "daily_loss_limit", "max_drawdown"):
            _check_positive(name, getattr(self, name), upper=1.0)
        for name in ("max_gross_leverage", "max_buying_power", "max_per_trade", "max_per_symbol"):
            _check_positive(name, getattr(self, name))
        _check_positive("periods_per_year", self.periods_per_year)
        # A standard deviation needs two returns; a position count needs one slot.
        for name, low in (("max_open_positions", 1), ("vol_lookback", 2)):
            value = getattr(self, name)
            if value is None and name == "max_open_positions":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"risk limit {name}={value!r} must be an integer >= {low}")

    @classmethod
    def from_settings(
        cls, settings: Any, *, vol_lookback: int = 20, periods_per_year: float = 252.0
    ) -> RiskLimits:
        """Every limit of a :class:`~trader.config.RiskSettings` (or of ``Settings.risk``), all switched on.

        >>> from trader.config import Settings
        >>> RiskLimits.from_settings(Settings()).max_position_pct
        0.1
        """
        risk = getattr(settings, "risk", settings)
        return cls(
            pos_size_method=risk.pos_size_method,
            vol_target=risk.vol_target,
            max_position_pct=risk.max_position_pct,
            max_open_positions=risk.max_open_positions,
            max_gross_leverage=risk.max_gross_leverage,
            max_buying_power=risk.max_buying_power,
            max_per_trade=risk.max_per_trade,
            max_per_symbol=risk.max_per_symbol,
            stop_loss_pct=risk.stop_loss_pct,
            daily_loss_limit=risk.daily_loss_limit,
            max_drawdown=risk.max_drawdown,
            vol_lookback=vol_lookback,
            periods_per_year=periods_per_year,
        )

    @property
    def active(self) -> bool:
        """True when at least one rule is switched on."""
        # Every rule but vol_target is named after the limit field that switches it on.
        return self.pos_size_method == "vol_target" or any(
            getattr(self, name) is not None for name in RULES if name != "vol_target"
        )


@dataclass(frozen=True)
class RiskEvent:
    """A rule that fired: its name (one of :data:`RULES`), the symbol (None = the account) and a detail value.

    The detail's unit depends on the rule: loss or drawdown fraction, weight, notional, or scale factor.
    """

    rule: str
    symbol: str | None
    detail: float


@dataclass(frozen=True)
class RiskState:
    """Account-level risk bookkeeping between bars (live): session, its starting equity, peak, halts.

    ``halted`` refuses new entries until the session changes (daily loss); ``killed`` refuses them for good
    (max drawdown). Start one with :meth:`start`, advance it with :func:`update_risk_state`.
    """

    session: int
    session_start_equity: float
    peak_equity: float
    last_equity: float
    halted: bool = False
    killed: bool = False

    @classmethod
    def start(cls, equity: float, session: int = 0) -> RiskState:
        """A fresh state at ``equity`` (account currency) in ``session``.

        >>> RiskState.start(100_000.0).peak_equity
        100000.0
        """
        return cls(session, equity, equity, equity)


def update_risk_state(
    state: RiskState, equity: float, session: int, limits: RiskLimits
) -> tuple[RiskState, tuple[RiskEvent, ...]]:
    """Advance ``state`` to a new equity mark (account currency) in ``session``; return it and what fired.

    Does what the simulator does at each bar's close: a new session starts from the last equity seen and
    lifts a daily halt; the peak follows equity; ``max_drawdown`` kills, else ``daily_loss_limit`` halts.

    >>> limits = RiskLimits(daily_loss_limit=0.03)
    >>> state, events = update_risk_state(RiskState.start(100_000.0), 96_000.0, 0, limits)
    >>> state.halted, events[0].rule
    (True, 'daily_loss_limit')
    """
    if session != state.session:
        state = replace(state, session=session, session_start_equity=state.last_equity, halted=False)
    state = replace(state, peak_equity=max(state.peak_equity, equity), last_equity=equity)
    if state.killed:
        return state, ()
    if limits.max_drawdown is not None and drawdown_hit(equity, state.peak_equity, limits.max_drawdown):
        detail = 1.0 - equity / state.peak_equity
        return replace(state, killed=True), (RiskEvent(RULES[RULE_MAX_DRAWDOWN], None, detail),)
    if (
        limits.daily_loss_limit is not None
        and not state.halted
        and daily_loss_hit(equity, state.session_start_equity, limits.daily_loss_limit)
    ):
        detail = 1.0 - equity / state.session_start_equity
        return replace(state, halted=True), (RiskEvent(RULES[RULE_DAILY_LOSS], None, detail),)
    return state, ()


@dataclass(frozen=True)
class OrderDecision:
    """The risk verdict on one order: approved, or the rule (a :data:`RULES` name) that rejects it."""

    approved: bool
    rule: str | None = None
    detail: float = math.nan
    message: str = "approved"


def _exceeds(value: float, cap: float | None) -> bool:
    return cap is not None and value > cap * (1.0 + CAP_TOLERANCE)


def approve_order(
    symbol: str,
    qty: float,
    price: float,
    *,
    positions: Mapping[str, float],
    prices: Mapping[str, float],
    equity: float,
    limits: RiskLimits,
    state: RiskState | None = None,
) -> OrderDecision:
    """Check one proposed order (signed ``qty`` shares of ``symbol`` at ``price``) against ``limits``.

    ``positions`` maps symbols to signed shares held now, ``prices`` to their last prices (account
    currency; ``price`` is used for ``symbol`` itself); ``equity`` is the account's equity now. An order that
    only reduces a position (same side, smaller or flat) is always approved, even when trading is halted, so
    exits always get through. Otherwise, in order: a killed or halted ``state`` rejects
    (``max_drawdown`` / ``daily_loss_limit``), then ``max_per_trade`` (this order's notional),
    ``max_per_symbol`` (the resulting position's notional), ``max_position_pct`` (that notional / equity),
    ``max_open_positions`` (opening one more symbol), ``max_gross_leverage`` and ``max_buying_power`` (gross
    notional after the order). The rejected detail is the offending value; a non-finite or zero ``qty``, a
    non-positive ``price`` or equity is rejected with rule ``"invalid_order"``.

    >>> limits = RiskLimits(max_per_trade=10_000.0)
    >>> approve_order("SPY", 100, 450.0, positions={}, prices={}, equity=1e5, limits=limits).rule
    'max_per_trade'
    """
    if not (math.isfinite(qty) and qty != 0 and math.isfinite(price) and price > 0):
        return OrderDecision(False, "invalid_order", math.nan, f"{symbol}: qty {qty!r} at price {price!r}")
    if not (math.isfinite(equity) and equity > 0):
        return OrderDecision(False, "invalid_order", equity, f"account equity {equity!r} is not positive")
    old = float(positions.get(symbol, 0.0))
    new = old + qty
    if abs(new) <= abs(old) and new * old >= 0:
        return OrderDecision(True, message="reduces the position")
    if state is not None and state.killed:
        return OrderDecision(
            False, RULES[RULE_MAX_DRAWDOWN], state.last_equity, "kill switch: no new entries"
        )
    if state is not None and state.halted:
        return OrderDecision(False, RULES[RULE_DAILY_LOSS], state.last_equity, "daily loss halt this session")

    def reject(code: int, value: float, what: str) -> OrderDecision:
        return OrderDecision(False, RULES[code], value, f"{symbol}: {what} {value:.6g} over {RULES[code]}")

    trade_notional = abs(qty) * price
    if _exceeds(trade_notional, limits.max_per_trade):
        return reject(RULE_MAX_PER_TRADE, trade_notional, "order notional")
    position_notional = abs(new) * price
    if _exceeds(position_notional, limits.max_per_symbol):
        return reject(RULE_MAX_PER_SYMBOL, position_notional, "position notional")
    if _exceeds(position_notional / equity, limits.max_position_pct):
        return reject(RULE_MAX_POSITION, position_notional / equity, "position / equity")
    held = {s for s, q in positions.items() if q != 0 and s != symbol}
    unpriced = sorted(
        s for s in held if not (math.isfinite(float(prices.get(s, math.nan))) and prices[s] > 0)
    )
    if unpriced:
        # Gross exposure cannot be known without every held symbol's price: refuse rather than guess.
        return OrderDecision(False, "invalid_order", math.nan, f"no price for held symbols {unpriced}")
    if limits.max_open_positions is not None and old == 0 and len(held) + 1 > limits.max_open_positions:
        return reject(RULE_MAX_OPEN_POSITIONS, float(len(held) + 1), "open positions")
    gross = position_notional + sum(abs(float(positions[s])) * float(prices[s]) for s in held)
    if _exceeds(gross / equity, limits.max_gross_leverage):
        return reject(RULE_MAX_GROSS_LEVERAGE, gross / equity, "gross leverage")
    if _exceeds(gross, limits.max_buying_power):
        return reject(RULE_MAX_BUYING_POWER, gross, "gross notional")
    return OrderDecision(True)
