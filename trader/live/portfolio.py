"""The backtest's portfolio, stepped one bar at a time: orders planned at each open, fills from a broker.

The live (paper) system must trade exactly as :func:`trader.sim.simulate` would on the same bars: same
targets, same order quantities, same risk rules. :class:`PortfolioStepper` holds the simulator kernel's state
between bars and exposes the bar's two moments separately:

* ``on_open(t, open_prices)`` - the orders the kernel would fill at bar t's open (:class:`OrderPlan`: signed
  shares, expected fill price with slippage, reason), *without* assuming they fill;
* ``apply_fill(symbol, qty, price, commission)`` - what the broker did (cash, shares, entry prices);
* ``on_close(t, close_prices, raw_weights, session_index, vol)`` - mark to market and decide (targets,
  pending orders, risk rules), exactly as the kernel does at bar t's close.

Parity by construction, not by a second copy of the rules: the stepper calls the kernel's own bar loop,
:func:`trader.sim.kernel._run_bars`, on a two-row window ``[previous bar, this bar]`` with its persistent
state arrays (cash, peak, session start, halts, shares, last prices, targets, pending flags, entry prices,
stop latches, binding flags). Row 1 is the bar being stepped (row 0 only supplies the previous session, so
the kernel's "new session" test sees the right pair); the decision gate ``t >= min_history_bars`` is passed
through the parameter vector (0 or 2 against the window's index 1).

* ``on_open`` runs that window with the open prices and NaN closes on *copies* of cash, shares and entry
  prices, with the close-time rules switched off: the kernel's fills on the copies are the plans, and what
  does not depend on the fill (pending flags cleared, last prices set to the open, fill-cap events) is kept.
* ``apply_fill`` applies one fill with the kernel's own arithmetic (cash, shares, average entry price). A
  fill equal to its plan lands on the plan's target position exactly as the kernel does (``new = want``
  rather than ``old + qty``, which may differ in the last bit).
* ``on_close`` runs the window with NaN opens and the close prices, weights, session and volatility: the
  open step does nothing (no open price: orders wait) and the close step is the kernel's, unchanged.

Driving it with every plan filled at its planned price and the kernel's commission, in plan order, gives
the trades, cash, equity, positions, targets and risk events of ``simulate`` bit for bit
(tests/unit/test_live_portfolio.py checks this over random inputs with every rule on and off). Cash is a
running sum, so bit-exactness needs the fills booked in plan order (symbol order), as the kernel books them.
The stepper leans on the kernel's internals (``_run_bars``, its ``_S_*`` state layout, the event room per
bar): a change there is caught by those parity tests, not silently.

Live behaviour beyond the kernel (documented choices):

* A plan not completely filled by the close of its bar (partial fill, rejection, or no fill) is pending
  again at that close, as the kernel's ``max_per_trade`` cut leaves the rest pending: the next usable open
  re-sizes the order from the target, the new portfolio value and the shares actually held. The execution
  layer should cancel any unfilled remainder at the broker before calling ``on_close``.
* :meth:`PortfolioStepper.sync` overwrites cash and positions with the broker's; a symbol whose position
  changed is (by default) marked pending for a rebalance, so the next open trades it back to its target.

Units: prices and cash in account currency; weights are signed fractions of equity; ``vol`` is annualised
volatility (fraction); bars are counted from 0; sessions are integers (a change = a new session).

Example::

    from trader.live import PortfolioStepper
    from trader.sim import SimConfig, commission

    config = SimConfig(initial_cash=10_000.0, commission_bps=1.0)
    stepper = PortfolioStepper(["SPY"], config)
    stepper.on_open(0, [100.0])
    stepper.on_close(0, [101.0], [1.0])            # full long, filled at bar 1's open
    for plan in stepper.on_open(1, [102.0]):        # one plan: buy 10000/102 shares
        fee = commission(plan.qty, plan.price, 1.0, 0.0, 0.0)
        stepper.apply_fill(plan.symbol, plan.qty, plan.price, fee)
    report = stepper.on_close(1, [103.0], [1.0])
    report.equity, stepper.shares
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import polars as pl

from trader.errors import DataError
from trader.risk import N_RULES, RULES, RiskLimits, trailing_vol
from trader.sim import kernel
from trader.sim.kernel import TRADE_REASONS, _run_bars
from trader.sim.portfolio import SimConfig, _events_frame, _params, _trades_frame

__all__ = ["CloseReport", "OrderPlan", "PortfolioStepper", "RuleFiring"]

# Version of the checkpoint layout written by PortfolioStepper.state().
STATE_VERSION: Final = 1


@dataclass(frozen=True)
class OrderPlan:
    """One order the kernel would fill at this open.

    ``symbol`` is the symbol's index (``name`` its name); ``qty`` signed shares (> 0 buy); ``price`` the
    expected fill price, slippage included (account currency); ``commission`` the kernel's commission for
    that fill; ``reason`` a code of :data:`trader.sim.kernel.TRADE_REASONS` (``reason_name``);
    ``target_shares`` the position once filled; ``final`` False when ``max_per_trade`` cut the order (the
    rest follows at later opens).
    """

    symbol: int
    name: str
    qty: float
    price: float
    commission: float
    reason: int
    target_shares: float
    final: bool

    @property
    def reason_name(self) -> str:
        """The reason as shown in ``SimResult.trades`` ("signal", "rebalance", "stop_loss", ...)."""
        return TRADE_REASONS[self.reason]


class RuleFiring(NamedTuple):
    """A risk rule that fired: ``bar``, ``symbol`` index (-1 = the account), ``rule`` (a
    :data:`trader.risk.RULES` name) and ``detail`` (the rule's value: weight, notional, loss fraction...)."""

    bar: int
    symbol: int
    rule: str
    detail: float


@dataclass(frozen=True)
class CloseReport:
    """What :meth:`PortfolioStepper.on_close` decided at bar ``bar``'s close.

    ``equity``/``cash`` in account currency; ``positions`` signed shares; ``targets`` target weights after
    risk rules; ``pending`` symbols to trade at the next usable open; ``events`` the rules that fired at this
    close; ``halted`` (daily loss, until the next session) and ``killed`` (drawdown, for good).
    """

    bar: int
    equity: float
    cash: float
    positions: np.ndarray
    targets: np.ndarray
    pending: np.ndarray
    events: tuple[RuleFiring, ...]
    halted: bool
    killed: bool


@dataclass
class _Plan:
    """Bookkeeping of one open's plan for one symbol: what was planned and how much has filled."""

    qty: float
    want: float
    final: bool
    reason: int
    filled: float = 0.0


def _vector(name: str, value: Any, n: int) -> np.ndarray:
    arr = np.array(value, dtype=np.float64).reshape(-1)
    if arr.shape != (n,):
        raise DataError(f"PortfolioStepper: {name} must hold {n} values (one per symbol), got {arr.shape}")
    return arr


def _prices(name: str, value: Any, n: int) -> np.ndarray:
    arr = _vector(name, value, n)
    bad = (arr <= 0) | np.isinf(arr)  # NaN passes: the symbol does not trade this bar
    if bad.any():
        j = int(np.argmax(bad))
        raise DataError(
            f"PortfolioStepper: {name} has {arr[j]!r} for symbol {j}; prices must be > 0 (NaN = no price)"
        )
    return arr


def _enc(x: float) -> float | str | None:
    """A float as JSON-safe data: finite as is (repr round-trips exactly), NaN as None, inf as a string."""
    x = float(x)
    if math.isfinite(x):
        return x
    return None if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _dec(x: float | str | None) -> float:
    return math.nan if x is None else float(x)


def _enc_list(values: Iterable[float]) -> list[float | str | None]:
    return [_enc(x) for x in values]


def _dec_array(values: Sequence[Any]) -> np.ndarray:
    return np.array([_dec(x) for x in values], dtype=np.float64)


def _restore(name: str, into: np.ndarray, values: np.ndarray) -> None:
    """Copy a checkpointed array into the stepper's own, refusing a shape that does not match."""
    if values.shape != into.shape:
        raise DataError(
            f"PortfolioStepper.from_state: {name} has shape {values.shape}, expected {into.shape}"
        )
    into[:] = values


class PortfolioStepper:
    """The simulator's portfolio stepped bar by bar (see the module docstring for the approach).

    ``symbols``: names, in the column order of every price, weight and vol vector; ``config``: account and
    costs (:class:`trader.sim.SimConfig`); ``limits``: risk rules (:class:`trader.risk.RiskLimits`, None =
    none). Per bar ``t`` (0, 1, 2, ... with no gaps) call :meth:`on_open`, then :meth:`apply_fill` for each
    fill, then :meth:`on_close`.

    >>> from trader.sim import SimConfig
    >>> s = PortfolioStepper(["A"], SimConfig(initial_cash=1_000.0))
    >>> s.on_open(0, [10.0]), s.on_close(0, [10.0], [0.5]).targets.tolist()
    ([], [0.5])
    >>> plan = s.on_open(1, [20.0])[0]
    >>> plan.qty, plan.price, plan.reason_name
    (25.0, 20.0, 'signal')
    """

    def __init__(self, symbols: Sequence[str], config: SimConfig, limits: RiskLimits | None = None) -> None:
        names = [str(s) for s in symbols]
        if not names or len(set(names)) != len(names):
            raise DataError(f"PortfolioStepper: symbols must be distinct and non-empty, got {names!r}")
        if not isinstance(config, SimConfig):
            raise DataError(f"PortfolioStepper: config must be a SimConfig, got {type(config).__name__}")
        self._symbols = names
        self._index = {s: j for j, s in enumerate(names)}
        self._config = config
        self._limits = limits
        n = len(names)

        # The kernel's persistent state, laid out as simulate_kernel lays it out.
        params = _params(config, limits)
        self._state = np.zeros(9)
        for k in (kernel._S_CASH, kernel._S_PEAK, kernel._S_SESSION_START, kernel._S_PREV_EQUITY):
            self._state[k] = config.initial_cash
        self._shares = np.zeros(n)
        self._last_px = np.zeros(n)
        self._target = np.zeros(n)
        self._raw = np.zeros(n)
        self._pending = np.zeros(n, np.bool_)
        self._reason = np.zeros(n, np.int64)
        self._entry = np.zeros(n)
        self._latch = np.zeros(n, np.int64)
        self._bound = np.zeros((N_RULES, n + 1), np.bool_)
        self._work = np.zeros(n)
        self._dropped = np.zeros(n, np.bool_)

        # Parameter vectors: the close step with and without a decision (the kernel's gate is
        # `t >= min_history`, here against the window's row index 1), and the open step with every
        # close-time rule off so that the close half of that window only marks prices (fused path).
        self._p_decide = params.copy()
        self._p_decide[kernel.P_MIN_HISTORY] = 0.0
        self._p_wait = params.copy()
        self._p_wait[kernel.P_MIN_HISTORY] = 2.0
        self._p_open = self._p_wait.copy()
        self._p_open[kernel.P_RISK_ON] = 0.0
        self._p_open[kernel.P_REBALANCE_THRESHOLD] = math.nan
        self._vol_on = limits is not None and limits.pos_size_method == "vol_target"

        # The two-row window and the kernel's output buffers, reused on every call.
        self._open2 = np.full((2, n), np.nan)
        self._close2 = np.full((2, n), np.nan)
        self._weights2 = np.full((2, n), np.nan)
        self._session2 = np.zeros(2, np.int64)
        self._vol2 = np.full((2, n), np.nan) if self._vol_on else np.zeros((1, 1))
        self._equity2 = np.zeros(2)
        self._cash2 = np.zeros(2)
        self._positions2 = np.zeros((2, n))
        self._targets2 = np.zeros((2, n))
        self._trade_buf = np.zeros((n, 6))
        self._event_buf = np.zeros((kernel._EVENTS_PER_SYMBOL * n + kernel._EVENTS_PER_BAR, 4))
        # Closes the trailing volatility needs when the caller passes none (vol targeting only).
        lookback = limits.vol_lookback if self._vol_on and limits is not None else 1
        self._closes = np.full((lookback + 1, n), np.nan)

        self._next_bar = 0  # the bar on_open expects
        self._open_bar: int | None = None  # the bar opened and not closed yet
        self._fill_bar = -1  # the bar whose open fills belong to
        self._last_session: int | None = None
        self._plans: dict[int, _Plan] = {}
        self._trades: list[tuple[float, float, float, float, float, float]] = []
        self._events: list[tuple[float, float, float, float]] = []

    # -- the bar's two moments -------------------------------------------------------------------------

    def on_open(self, t: int, open_prices: Any) -> list[OrderPlan]:
        """The orders the backtest would fill at bar ``t``'s open, in symbol order; none is applied.

        ``open_prices``: one per symbol (account currency, NaN = no open: the order waits). Each order is
        sized at this open from the target weight and the portfolio value at this open, with whole shares,
        ``max_per_symbol`` and ``max_per_trade`` as the kernel applies them (fill-cap events are recorded
        here). Report what the broker did with :meth:`apply_fill`.

        >>> from trader.sim import SimConfig
        >>> PortfolioStepper(["A"], SimConfig()).on_open(0, [10.0])
        []
        """
        if t != self._next_bar or self._open_bar is not None:
            expected = self._next_bar if self._open_bar is None else f"on_close({self._open_bar})"
            raise DataError(
                f"PortfolioStepper.on_open({t}): bars must be stepped in order; expected {expected}"
            )
        prices = _prices("open_prices", open_prices, len(self._symbols))
        self._open_bar = t
        self._fill_bar = t
        self._plans.clear()
        if self._state[kernel._S_N_PENDING] == 0:
            return []
        self._open2[1] = prices
        self._close2[1] = np.nan
        self._weights2[1] = np.nan
        self._session2[:] = 0
        # The kernel fills on copies: pending flags, last prices and fill-cap events are kept (they do
        # not depend on the fill); cash, shares and entry prices change only through apply_fill.
        state = self._state.copy()
        shares = self._shares.copy()
        n_trades, n_events = self._step(self._p_open, state, shares, self._entry.copy())
        self._state[kernel._S_N_PENDING] = state[kernel._S_N_PENDING]
        self._record_events(t, n_events)
        plans = []
        for row in self._trade_buf[:n_trades]:
            j = int(row[1])
            final = not bool(self._pending[j])
            plan = OrderPlan(
                j, self._symbols[j], float(row[2]), float(row[3]), float(row[4]), int(row[5]),
                float(shares[j]), final,
            )  # fmt: skip
            self._plans[j] = _Plan(plan.qty, plan.target_shares, final, plan.reason)
            plans.append(plan)
        return plans

    def apply_fill(self, symbol: int | str, qty: float, price: float, commission: float) -> None:
        """Book one fill: ``qty`` signed shares (> 0 bought) at ``price`` (account currency, slippage
        included) paying ``commission`` (account currency): cash, shares and the average entry price move
        as the kernel moves them.

        In parity mode pass each :class:`OrderPlan` as its own fill; in live mode pass what the broker
        reported (partial fills too, in any number of pieces). A plan not completely filled by
        :meth:`on_close` is pending again (see the module docstring). A fill with no plan (a late fill, a
        manual trade) is booked all the same, with the symbol's last trade reason.

        >>> from trader.sim import SimConfig
        >>> s = PortfolioStepper(["A"], SimConfig(initial_cash=1_000.0))
        >>> s.apply_fill("A", 10.0, 20.0, 1.0); s.cash, s.shares.tolist()
        (799.0, [10.0])
        """
        j = self._symbol_index(symbol)
        for name, value in (("qty", qty), ("price", price), ("commission", commission)):
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise DataError(f"PortfolioStepper.apply_fill: {name}={value!r} is not a number")
        qty, price, fee = float(qty), float(price), float(commission)
        if not (
            math.isfinite(qty) and math.isfinite(price) and price > 0 and math.isfinite(fee) and fee >= 0
        ):
            raise DataError(
                f"PortfolioStepper.apply_fill: bad fill for {self._symbols[j]}: qty={qty!r} price={price!r} "
                f"commission={fee!r} (finite qty, price > 0, commission >= 0)"
            )
        if qty == 0.0:
            return
        plan = self._plans.get(j)
        old = float(self._shares[j])
        # The kernel's own arithmetic, operation for operation (Python floats are IEEE doubles as well).
        self._state[kernel._S_CASH] = float(self._state[kernel._S_CASH]) - (qty * price + fee)
        if plan is not None:
            plan.filled += qty
        new = plan.want if plan is not None and plan.final and plan.filled == plan.qty else old + qty
        entry = float(self._entry[j])
        if new == 0.0:
            entry = 0.0
        elif old == 0.0 or (old > 0.0) != (new > 0.0):
            entry = price  # opened or flipped: a fresh entry
        elif abs(new) > abs(old):
            entry = (entry * abs(old) + price * abs(qty)) / abs(new)
        self._entry[j] = entry
        self._shares[j] = new
        reason = plan.reason if plan is not None else int(self._reason[j])
        self._trades.append((float(self._fill_bar), float(j), qty, price, fee, float(reason)))

    def on_close(
        self,
        t: int,
        close_prices: Any,
        raw_weights: Any = None,
        session_index: int | None = None,
        vol: Any = None,
    ) -> CloseReport:
        """Mark to market at bar ``t``'s close and decide, exactly as the backtest does at that close.

        ``close_prices``: one per symbol (NaN = no close: valued at its last price); ``raw_weights``: the
        strategy's target weights decided at this close, before risk rules (NaN or None = no new decision);
        ``session_index``: this bar's session number (default ``t``: each bar its own session, right for
        daily bars; intraday bars pass :func:`trader.sim.session_index_from_ts`'s value); ``vol``:
        annualised trailing volatility per symbol from rows <= t, read by vol targeting only (default: the
        simulator's own ``trailing_vol`` over the closes seen, ``limits.vol_lookback`` returns).
        """
        if self._open_bar != t:
            raise DataError(
                f"PortfolioStepper.on_close({t}): call on_open({t}) first (each bar: open, fills, close)"
            )
        n = len(self._symbols)
        closes = _prices("close_prices", close_prices, n)
        weights = np.full(n, np.nan) if raw_weights is None else _vector("raw_weights", raw_weights, n)
        if np.isinf(weights).any():
            raise DataError(
                "PortfolioStepper.on_close: raw_weights hold an infinite value; NaN = no decision"
            )
        session = t if session_index is None else session_index
        if isinstance(session, bool) or not isinstance(session, int | np.integer):
            raise DataError(f"PortfolioStepper.on_close: session_index={session!r} must be an integer")
        self._finish_plans()
        if self._vol_on:
            self._vol2[1] = self._trailing_vol(closes, vol)
        self._open2[1] = np.nan
        self._close2[1] = closes
        self._weights2[1] = weights
        # Row 0 is the previous bar's session; the kernel never sees a session change at bar 0.
        self._session2[0] = int(session) if self._last_session is None else self._last_session
        self._session2[1] = int(session)
        params = self._p_decide if t >= self._config.min_history_bars else self._p_wait
        _, n_events = self._step(params, self._state, self._shares, self._entry)
        fired = self._record_events(t, n_events)
        self._last_session = int(session)
        self._open_bar = None
        self._next_bar = t + 1
        return CloseReport(
            t,
            float(self._equity2[1]),
            float(self._cash2[1]),
            self._positions2[1].copy(),
            self._targets2[1].copy(),
            self._pending.copy(),
            fired,
            self.halted,
            self.killed,
        )

    def sync(
        self,
        cash: float,
        shares: Mapping[str, float] | Sequence[float] | np.ndarray,
        *,
        entry_prices: Mapping[str, float] | Sequence[float] | np.ndarray | None = None,
        rebalance: bool = True,
    ) -> list[int]:
        """Overwrite cash and positions with the broker's (account currency, signed shares); return the
        indices of the symbols whose position changed.

        ``shares``: one per symbol, or a mapping (symbols left out are flat). The next orders are sized from
        these positions. ``entry_prices`` (optional, same forms) sets the stop-loss entry prices; without
        it a changed position keeps its entry when it stays on the same side, opens at the last price seen
        when it is new or flipped, and drops it when flat. With ``rebalance`` every changed symbol is marked
        pending ("rebalance") so the next usable open trades it back to its target.

        >>> from trader.sim import SimConfig
        >>> s = PortfolioStepper(["A", "B"], SimConfig(initial_cash=1_000.0))
        >>> s.sync(500.0, {"B": 5.0}), s.cash, s.shares.tolist(), s.pending.tolist()
        ([1], 500.0, [0.0, 5.0], [False, True])
        """
        cash = float(cash)
        if not math.isfinite(cash):
            raise DataError(f"PortfolioStepper.sync: cash={cash!r} is not finite")
        new = self._per_symbol("shares", shares, 0.0)
        if not np.isfinite(new).all():
            raise DataError("PortfolioStepper.sync: shares must be finite numbers")
        entries = None if entry_prices is None else self._per_symbol("entry_prices", entry_prices, math.nan)
        changed = [j for j in range(len(self._symbols)) if new[j] != self._shares[j]]
        for j in range(len(self._symbols)):
            old = float(self._shares[j])
            if entries is not None and math.isfinite(entries[j]):
                self._entry[j] = entries[j] if new[j] != 0.0 else 0.0
            elif new[j] == 0.0:
                self._entry[j] = 0.0
            elif old == 0.0 or (old > 0.0) != (new[j] > 0.0):
                self._entry[j] = self._last_px[j]
        self._shares[:] = new
        self._state[kernel._S_CASH] = cash
        if rebalance:
            for j in changed:
                self._reason[j] = kernel.REASON_DRIFT
                if not self._pending[j]:
                    self._pending[j] = True
                    self._state[kernel._S_N_PENDING] += 1
        return changed

    # -- read-only views ---------------------------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        """Symbol names, in column order."""
        return list(self._symbols)

    @property
    def config(self) -> SimConfig:
        """Account and cost settings."""
        return self._config

    @property
    def limits(self) -> RiskLimits | None:
        """Risk limits (None = none)."""
        return self._limits

    @property
    def next_bar(self) -> int:
        """The bar index the next :meth:`on_open` expects."""
        return self._next_bar

    @property
    def cash(self) -> float:
        """Cash, account currency (negative = margin)."""
        return float(self._state[kernel._S_CASH])

    @property
    def equity(self) -> float:
        """``cash + sum(shares * last price)``, account currency; the last price is the last close, or this
        bar's open for a symbol ordered at it. Right after :meth:`on_close` it is the backtest's equity."""
        equity = float(self._state[kernel._S_CASH])
        for s, px in zip(self._shares.tolist(), self._last_px.tolist(), strict=True):
            equity += s * px  # the kernel's summation order, so the value is the kernel's to the bit
        return equity

    @property
    def shares(self) -> np.ndarray:
        """Signed shares held per symbol (a copy)."""
        return self._shares.copy()

    @property
    def entry_prices(self) -> np.ndarray:
        """Average entry price of each open position (0 = flat; a copy), account currency."""
        return self._entry.copy()

    @property
    def last_prices(self) -> np.ndarray:
        """The latest finite price seen per symbol (0 = none yet; a copy), account currency."""
        return self._last_px.copy()

    @property
    def targets(self) -> np.ndarray:
        """Target weights in force after risk rules (fractions of equity; a copy)."""
        return self._target.copy()

    @property
    def pending(self) -> np.ndarray:
        """True for symbols that trade at the next usable open (a copy)."""
        return self._pending.copy()

    @property
    def halted(self) -> bool:
        """Daily loss limit hit: no new entries until the next session."""
        return bool(self._state[kernel._S_HALTED])

    @property
    def killed(self) -> bool:
        """Drawdown kill switch hit: no new entries for good."""
        return bool(self._state[kernel._S_KILLED])

    @property
    def peak_equity(self) -> float:
        """Highest close equity so far (drawdown reference; risk rules on only), account currency."""
        return float(self._state[kernel._S_PEAK])

    @property
    def trade_rows(self) -> np.ndarray:
        """Every fill booked: (n, 6) float64 in :data:`trader.sim.kernel.TRADE_COLUMNS` order (signed qty)."""
        return np.array(self._trades, dtype=np.float64).reshape(-1, 6)

    @property
    def event_rows(self) -> np.ndarray:
        """Every rule firing: (n, 4) float64 in :data:`trader.sim.kernel.EVENT_COLUMNS` order (rule code)."""
        return np.array(self._events, dtype=np.float64).reshape(-1, 4)

    @property
    def trades(self) -> pl.DataFrame:
        """Every fill booked, laid out as :attr:`trader.sim.SimResult.trades`."""
        return _trades_frame(self.trade_rows)

    @property
    def events(self) -> pl.DataFrame:
        """Every risk rule firing so far, laid out as :attr:`trader.sim.SimResult.events`."""
        return _events_frame(self.event_rows)

    @property
    def risk_events(self) -> list[RuleFiring]:
        """Every risk rule firing so far, as :class:`RuleFiring` tuples."""
        return [RuleFiring(int(b), int(s), RULES[int(r)], d) for b, s, r, d in self._events]

    # -- checkpoint ------------------------------------------------------------------------------------

    def state(self, *, history: bool = True) -> dict[str, Any]:
        """A JSON-safe checkpoint (plain dicts, lists, numbers, strings; no NaN) that :meth:`from_state`
        restores exactly, mid-bar included (between on_open and on_close).

        ``history=False`` leaves out the trades and rule firings so far (they grow with the session; a live
        system keeps them in its order journal and event log): the restored stepper trades on identically,
        its :attr:`trades` and :attr:`events` starting empty.

        >>> import json
        >>> from trader.sim import SimConfig
        >>> s = PortfolioStepper(["A"], SimConfig())
        >>> PortfolioStepper.from_state(json.loads(json.dumps(s.state()))).cash
        100000.0
        """
        return {
            "version": STATE_VERSION,
            "symbols": list(self._symbols),
            "config": asdict(self._config),
            "limits": None if self._limits is None else asdict(self._limits),
            "next_bar": self._next_bar,
            "open_bar": self._open_bar,
            "fill_bar": self._fill_bar,
            "last_session": self._last_session,
            "kernel_state": _enc_list(self._state),
            "shares": _enc_list(self._shares),
            "last_px": _enc_list(self._last_px),
            "target": _enc_list(self._target),
            "raw": _enc_list(self._raw),
            "pending": [bool(x) for x in self._pending],
            "reason": [int(x) for x in self._reason],
            "entry": _enc_list(self._entry),
            "latch": [int(x) for x in self._latch],
            "bound": [[bool(x) for x in row] for row in self._bound],
            "closes": [_enc_list(row) for row in self._closes],
            "plans": [
                {
                    "symbol": j,
                    "qty": p.qty,
                    "want": p.want,
                    "final": p.final,
                    "reason": p.reason,
                    "filled": p.filled,
                }
                for j, p in sorted(self._plans.items())
            ],
            "trades": [_enc_list(row) for row in self._trades] if history else [],
            "events": [_enc_list(row) for row in self._events] if history else [],
        }

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> PortfolioStepper:
        """A stepper restored from :meth:`state` (possibly through JSON); raises DataError on a bad one."""
        try:
            if d["version"] != STATE_VERSION:
                raise DataError(
                    f"PortfolioStepper.from_state: checkpoint version {d['version']!r} is unknown"
                )
            limits = None if d["limits"] is None else RiskLimits(**d["limits"])
            self = cls(d["symbols"], SimConfig(**d["config"]), limits)
            self._next_bar = int(d["next_bar"])
            self._open_bar = None if d["open_bar"] is None else int(d["open_bar"])
            self._fill_bar = int(d["fill_bar"])
            self._last_session = None if d["last_session"] is None else int(d["last_session"])
            _restore("kernel_state", self._state, _dec_array(d["kernel_state"]))
            for name in ("shares", "last_px", "target", "raw", "entry"):
                _restore(name, getattr(self, "_" + name), _dec_array(d[name]))
            for name, dtype in (("pending", np.bool_), ("reason", np.int64), ("latch", np.int64)):
                _restore(name, getattr(self, "_" + name), np.array(d[name], dtype=dtype))
            _restore("bound", self._bound, np.array(d["bound"], dtype=np.bool_))
            closes = np.array([[_dec(x) for x in row] for row in d["closes"]], dtype=np.float64)
            _restore("closes", self._closes, closes)
            for p in d["plans"]:
                self._plans[int(p["symbol"])] = _Plan(
                    float(p["qty"]), float(p["want"]), bool(p["final"]), int(p["reason"]), float(p["filled"])
                )
            self._trades = [tuple(_dec(x) for x in row) for row in d["trades"]]  # type: ignore[misc]
            self._events = [tuple(_dec(x) for x in row) for row in d["events"]]  # type: ignore[misc]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"PortfolioStepper.from_state: not a stepper checkpoint ({exc!r})") from exc
        return self

    # -- internals -------------------------------------------------------------------------------------

    def _step(
        self, params: np.ndarray, state: np.ndarray, shares: np.ndarray, entry: np.ndarray
    ) -> tuple[int, int]:
        """Run the kernel's bar loop over row 1 of the window; return (new trade rows, new event rows)."""
        state[kernel._S_N_TRADES] = 0.0
        state[kernel._S_N_EVENTS] = 0.0
        end = _run_bars(
            1, self._open2, self._close2, self._weights2, self._session2, self._vol2, params, state, shares,
            self._last_px, self._target, self._raw, self._pending, self._reason, entry, self._latch,
            self._bound, self._work, self._dropped, self._trade_buf, self._event_buf,
            self._equity2, self._cash2, self._positions2, self._targets2,
        )  # fmt: skip
        if end != 2:  # the buffers hold one bar by construction; anything else is a broken invariant
            raise RuntimeError(f"kernel stopped at window row {end}, expected 2")
        return int(state[kernel._S_N_TRADES]), int(state[kernel._S_N_EVENTS])

    def _record_events(self, t: int, n_events: int) -> tuple[RuleFiring, ...]:
        fired = []
        for row in self._event_buf[:n_events]:
            symbol, rule, detail = int(row[1]), int(row[2]), float(row[3])
            self._events.append((float(t), float(symbol), float(rule), detail))
            fired.append(RuleFiring(t, symbol, RULES[rule], detail))
        return tuple(fired)

    def _finish_plans(self) -> None:
        """At the close, a plan not completely filled is pending again (the rest is re-sized next open)."""
        for j, plan in self._plans.items():
            if plan.filled != plan.qty and not self._pending[j]:
                self._pending[j] = True
                self._state[kernel._S_N_PENDING] += 1
        self._plans.clear()

    def _trailing_vol(self, closes: np.ndarray, vol: Any) -> np.ndarray:
        """This bar's vol row: the caller's, or the simulator's trailing_vol over the last closes."""
        self._closes[:-1] = self._closes[1:]
        self._closes[-1] = closes
        if vol is not None:
            arr = _vector("vol", vol, len(self._symbols))
            if (arr < 0).any() or np.isinf(arr).any():
                raise DataError(
                    "PortfolioStepper.on_close: vol must be annualised volatilities >= 0 (NaN = unknown)"
                )
            return arr
        limits = self._limits
        assert limits is not None  # vol targeting is on
        # Row `lookback` of trailing_vol over the last lookback + 1 closes is the simulator's row t.
        return trailing_vol(self._closes, limits.vol_lookback, limits.periods_per_year)[-1]

    def _symbol_index(self, symbol: int | str) -> int:
        if isinstance(symbol, str):
            if symbol not in self._index:
                raise DataError(f"PortfolioStepper: unknown symbol {symbol!r} (known: {self._symbols})")
            return self._index[symbol]
        if isinstance(symbol, bool) or not isinstance(symbol, int | np.integer):
            raise DataError(f"PortfolioStepper: symbol must be an index or a name, got {symbol!r}")
        if not 0 <= symbol < len(self._symbols):
            raise DataError(
                f"PortfolioStepper: symbol index {symbol} out of range 0..{len(self._symbols) - 1}"
            )
        return int(symbol)

    def _per_symbol(self, name: str, value: Any, default: float) -> np.ndarray:
        if isinstance(value, Mapping):
            out = np.full(len(self._symbols), default)
            for symbol, x in value.items():
                out[self._symbol_index(symbol)] = float(x)
            return out
        return _vector(name, value, len(self._symbols))
