"""numba kernels of :mod:`trader.live.stream_bandit`: one bar of the contextual bandit, bit for bit
:func:`trader.bandit.bandit_select`.

A bar does, in this order (the order the vectorised code implies):

1. every arm's own target (``stream_kernels.strategy_step``; 0 on a bar with a non-finite input, as
   ``nan_to_num(Composer.strategy_targets)``);
2. the context features (``stream_kernels`` regime / realised-vol / efficiency-ratio / ADX steps, the
   momentum z-score) exactly as ``bandit._context``;
3. the running sums of ``bandit._period_rewards`` (``cumsum`` of each arm's pnl and turnover, sequential
   from the first bar, so the differences are the same floats);
4. the rewards whose window ends at this bar (decision bar + horizon), applied in decision order with
   ``bandit._step`` exactly as ``bandit._replay_kernel`` applies them;
5. a decision (the first bar >= start whose context is finite, then every ``decision_every`` bars): the
   Thompson draw of ``_replay_kernel`` with the seed of ``bandit.decision_seeds``.

Units: targets are fractions of equity; rewards per decision period (volatility-scaled with ``vol``);
costs as fractions (bps / 1e4); ``ts`` int ns UTC.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from trader.bandit import _GOLDEN, _mix64, _step, thompson_draw
from trader.live import stream_kernels as sk

# bi (int64 configuration) slots
BI_K = 0  # arms
BI_D = 1  # context dimension
BI_EVERY = 2  # decision_every, bars
BI_HORIZON = 3  # reward horizon, bars
BI_START = 4  # first bar index allowed to decide (engine.min_history_bars)
BI_FULL = 5  # 1 = full_information, 0 = bandit
BI_USE_WINDOW = 6  # 1 = forgetting window, 0 = discount
BI_WINDOW = 7  # rewards kept per arm (window mode)
BI_VOL_SCALE = 8  # 1 = reward_scale vol
BI_BAD = 9  # input bits whose non-finite value blanks the arms' targets: 1 open, 2 high, 4 low, 8 close
BI_NG = 10  # feature groups
BI_PCAP = 11  # pending decisions' ring capacity
BI_VOL_FO = 12  # realised vol state (fs ring of VOL_BARS, st run index)
BI_VOL_IO = 13
BI_ER_FO = 14
BI_ER_IO = 15
BI_ADX_FO = 16
BI_ADX_IO = 17
BI_VOL_N = 18
BI_ER_N = 19
BI_ADX_N = 20
BI_GROUPS = 24  # group codes, in context order
BI_SIZE = 32

G_REGIME = 0
G_VOLATILITY = 1
G_ER = 2
G_TREND = 3
G_MOMENTUM = 4

# bf (float64 configuration) slots
BF_COST = 0  # (commission + slippage) bps / 1e4
BF_SQRT_PPY = 1  # math.sqrt(periods_per_year), annualises the volatility feature
BF_DISCOUNT = 2
BF_LAM0 = 3  # 1 / prior_variance
BF_A0 = 4
BF_B0 = 5
BF_SQRT_H = 6  # np.sqrt(horizon)
BF_SQRT_MOM = 7  # math.sqrt(MOMENTUM_BARS)
BF_SIZE = 8

# bs (int64 state) slots
S_T = 0  # bars stepped
S_STARTED = 1  # a first decision was made
S_FIRST = 2  # its bar index
S_DECISIONS = 3
S_CHOSEN = 4  # the current decision's arm
S_HEAD = 5  # pending ring: oldest slot
S_PENDING = 6  # pending decisions (reward window not yet ended)
S_RING = 8  # pending ring: (decision bar, chosen arm) per slot


def bx_size(k: int, d: int, pcap: int) -> int:
    """Floats of bandit state: prev close, previous targets, cum pnl, cum cost, context, targets, rewards,
    then per pending slot (scale, context, cum pnl at the decision, cum cost before it)."""
    return 1 + 5 * k + d + pcap * (1 + d + 2 * k)


_JIT = {"cache": True, "error_model": "numpy"}


@njit(**_JIT)
def _apply(
    bi: np.ndarray,
    bf: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    arm_j: int,
    ts: int,
    mean: np.ndarray,
    prec: np.ndarray,
    chol: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    count: np.ndarray,
    last: np.ndarray,
    wx: np.ndarray,
    wy: np.ndarray,
    wn: np.ndarray,
    wstart: np.ndarray,
    eta: np.ndarray,
    tmp: np.ndarray,
) -> None:
    """One decision's rewards ``y`` (per arm, NaN = unknown) into the posteriors: _replay_kernel's body."""
    k = bi[BI_K]
    full_information = bi[BI_FULL] != 0
    use_window = bi[BI_USE_WINDOW] != 0
    cap = bi[BI_WINDOW] if use_window else 1
    gamma = 1.0 if use_window else bf[BF_DISCOUNT]
    lam0 = bf[BF_LAM0]
    a0 = bf[BF_A0]
    b0 = bf[BF_B0]
    if full_information:
        usable = False
        for arm in range(k):
            if math.isfinite(y[arm]):
                usable = True
    else:
        usable = math.isfinite(y[arm_j])
    if not usable:
        return
    for arm in range(k):
        yy = y[arm]
        has = math.isfinite(yy) and (full_information or arm == arm_j)
        if not has:
            if gamma != 1.0:
                _step(arm, x, 0.0, 0.0, gamma, mean, prec, chol, a, b, lam0, a0, b0, eta, tmp)
            continue
        _step(arm, x, yy, 1.0, gamma, mean, prec, chol, a, b, lam0, a0, b0, eta, tmp)
        count[arm] += 1
        last[arm] = ts
        if use_window:
            slot = (wstart[arm] + wn[arm]) % cap
            if wn[arm] == cap:  # full: drop the oldest reward exactly
                old = wstart[arm]
                _step(
                    arm, wx[arm, old], wy[arm, old], -1.0, 1.0, mean, prec, chol, a, b, lam0, a0, b0, eta, tmp
                )
                wstart[arm] = (old + 1) % cap
                slot = old
            else:
                wn[arm] += 1
            for p in range(x.shape[0]):
                wx[arm, slot, p] = x[p]
            wy[arm, slot] = yy


@njit(**_JIT)
def bandit_step(
    ci: np.ndarray,
    cf: np.ndarray,
    fs: np.ndarray,
    st: np.ndarray,
    bi: np.ndarray,
    bf: np.ndarray,
    bs: np.ndarray,
    bx: np.ndarray,
    rng: np.ndarray,
    mean: np.ndarray,
    prec: np.ndarray,
    chol: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    count: np.ndarray,
    last: np.ndarray,
    wx: np.ndarray,
    wy: np.ndarray,
    wn: np.ndarray,
    wstart: np.ndarray,
    eta: np.ndarray,
    tmp: np.ndarray,
    o: float,
    h: float,
    lo: float,
    c: float,
    lr: float,
    mlog: float,
    ts: int,
) -> float:
    """The bandit's target at this bar's close (see the module docstring for the order of the work).

    ``lr``: the bar's log return as indicators.log_returns gives it; ``mlog``: np.log(close / close 20 bars
    earlier) (NaN when undefined or not wanted); ``rng[1]``: the symbol's seed key of decision_seeds."""
    t = bs[S_T]
    bs[S_T] = t + 1
    k = bi[BI_K]
    d = bi[BI_D]
    w_prev = 1
    cum_p = 1 + k
    cum_c = 1 + 2 * k
    ctx = 1 + 3 * k
    tg = ctx + d
    yo = tg + k
    ring = yo + k
    slot_size = 1 + d + 2 * k

    # 1. the arms' own targets (NaN rows of strategy_targets become 0 through nan_to_num)
    mask = bi[BI_BAD]
    bad = False
    if (mask & 1) and not np.isfinite(o):
        bad = True
    if (mask & 2) and not np.isfinite(h):
        bad = True
    if (mask & 4) and not np.isfinite(lo):
        bad = True
    if (mask & 8) and not np.isfinite(c):
        bad = True
    for j in range(k):
        value = sk.strategy_step(ci, cf, j, fs, st, t, o, h, lo, c)
        bx[tg + j] = 0.0 if bad or np.isnan(value) else value

    # 2. context (bandit._context); sigma always, it scales rewards and momentum
    sigma = sk.realized_vol_step(fs, bi[BI_VOL_FO], st, bi[BI_VOL_IO], bi[BI_VOL_N], 1.0, lr)
    col = ctx
    bx[col] = 1.0
    col += 1
    for g in range(bi[BI_NG]):
        group = bi[BI_GROUPS + g]
        if group == G_REGIME:
            code = sk.regime_step(ci, cf, fs, st, h, lo, c, lr)
            for q in range(3):
                bx[col] = 1.0 if code == q else 0.0
                col += 1
        elif group == G_VOLATILITY:
            bx[col] = sigma * bf[BF_SQRT_PPY]
            col += 1
        elif group == G_ER:
            bx[col] = sk.er_step(fs, bi[BI_ER_FO], st, bi[BI_ER_IO], bi[BI_ER_N], c)
            col += 1
        elif group == G_TREND:
            bx[col] = sk.adx_step(fs, bi[BI_ADX_FO], st, bi[BI_ADX_IO], bi[BI_ADX_N], h, lo, c) / 100.0
            col += 1
        else:  # G_MOMENTUM
            z = mlog / (sigma * bf[BF_SQRT_MOM])
            if np.isinf(z):
                z = np.nan
            elif z < -3.0:
                z = -3.0
            elif z > 3.0:
                z = 3.0
            bx[col] = z
            col += 1

    # 3. running pnl (cumsum of w[u-1] * r[u]); cost sums are added after the rewards read cum_cost[t-1]
    r = 0.0
    if t > 0:
        r = c / bx[0] - 1.0
        if not np.isfinite(r):
            r = 0.0  # a missing bar earns nothing
    bx[0] = c
    for j in range(k):
        bx[cum_p + j] = bx[cum_p + j] + bx[w_prev + j] * r

    # 4. rewards whose window ends here, in decision order
    horizon = bi[BI_HORIZON]
    cost = bf[BF_COST]
    cap = bi[BI_PCAP]
    while bs[S_PENDING] > 0:
        head = bs[S_HEAD]
        if bs[S_RING + 2 * head] + horizon > t:
            break
        so = ring + head * slot_size
        s = bx[so]
        good = np.isfinite(s) and s > 0
        for j in range(k):
            earned = bx[cum_p + j] - bx[so + 1 + d + j]
            paid = bx[cum_c + j] - bx[so + 1 + d + k + j]
            value = (earned - cost * paid) / s
            bx[yo + j] = value if good else np.nan
        _apply(
            bi, bf, bx[so + 1 : so + 1 + d], bx[yo : yo + k], bs[S_RING + 2 * head + 1], ts,
            mean, prec, chol, a, b, count, last, wx, wy, wn, wstart, eta, tmp,
        )  # fmt: skip
        bs[S_HEAD] = (head + 1) % cap
        bs[S_PENDING] -= 1

    # 5. a decision
    decide = False
    if bs[S_STARTED] == 0:
        if t >= bi[BI_START]:
            finite = True
            for p in range(d):
                if not np.isfinite(bx[ctx + p]):
                    finite = False
            if finite:
                bs[S_STARTED] = 1
                bs[S_FIRST] = t
                decide = True
    elif (t - bs[S_FIRST]) % bi[BI_EVERY] == 0:
        decide = True
    if decide:
        slot = (bs[S_HEAD] + bs[S_PENDING]) % cap
        so = ring + slot * slot_size
        x = bx[so + 1 : so + 1 + d]
        for p in range(d):
            v = bx[ctx + p]
            x[p] = v if np.isfinite(v) else 0.0  # nan_to_num(nan=0, posinf=0, neginf=0)
        bx[so] = bf[BF_SQRT_H] * sigma if bi[BI_VOL_SCALE] != 0 else 1.0
        for j in range(k):
            bx[so + 1 + d + j] = bx[cum_p + j]
            bx[so + 1 + d + k + j] = bx[cum_c + j] if t > 0 else 0.0
        # Thompson draw: the replay's own code, seeded as decision_seeds seeds it
        rng[0] = _mix64(rng[1] ^ _mix64(np.uint64(ts) + _GOLDEN))
        pick = thompson_draw(rng, x, a, b, chol, mean, tmp, np.empty(k))
        bs[S_CHOSEN] = pick
        bs[S_DECISIONS] += 1
        bs[S_RING + 2 * slot] = t
        bs[S_RING + 2 * slot + 1] = pick
        bs[S_PENDING] += 1

    # the turnover sums (cum_cost[t]) and this bar's targets for the next bar's pnl
    for j in range(k):
        w = bx[tg + j]
        bx[cum_c + j] = bx[cum_c + j] + abs(w - bx[w_prev + j])
        bx[w_prev + j] = w
    if bs[S_STARTED] == 0:
        return 0.0
    return bx[tg + bs[S_CHOSEN]]


@njit(**_JIT)
def bandit_many(
    ci: np.ndarray,
    cf: np.ndarray,
    fs: np.ndarray,
    st: np.ndarray,
    bi: np.ndarray,
    bf: np.ndarray,
    bs: np.ndarray,
    bx: np.ndarray,
    rng: np.ndarray,
    mean: np.ndarray,
    prec: np.ndarray,
    chol: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    count: np.ndarray,
    last: np.ndarray,
    wx: np.ndarray,
    wy: np.ndarray,
    wn: np.ndarray,
    wstart: np.ndarray,
    eta: np.ndarray,
    tmp: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    lr: np.ndarray,
    mlog: np.ndarray,
    ts: np.ndarray,
    out: np.ndarray,
) -> None:
    """bandit_step over a history, oldest bar first (the warm path: one call for any number of bars)."""
    for i in range(c.shape[0]):
        out[i] = bandit_step(
            ci, cf, fs, st, bi, bf, bs, bx, rng, mean, prec, chol, a, b, count, last, wx, wy, wn, wstart,
            eta, tmp, o[i], h[i], lo[i], c[i], lr[i], mlog[i], ts[i],
        )  # fmt: skip
