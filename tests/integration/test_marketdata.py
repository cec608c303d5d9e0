"""Live bars from the simulated gateway through the real ib_insync client (cluster.marketdata.GatewayBars).

Every test runs a gateway on its own thread replaying a small synthetic store, and the feed on an asyncio loop
in the test's thread. Nothing sleeps for time: tests await the feed's items and notes with timeouts, and a
fake clock where wall time matters. Expected bars are read back from the store the gateway replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pytest
from ib_insync import IB
from ib_insync import Stock as IbStock

from cluster.marketdata import GatewayBars
from trader.broker.errors import BrokerConnectionError, ContractError
from trader.calendar import get_calendar
from trader.config import GapFillerSettings
from trader.data.store import BarStore
from trader.data.synth import synth_bars
from trader.errors import ConfigError
from trader.ibsim import GatewayConfig, SimGateway, run_gateway

pytestmark = pytest.mark.integration

SYMBOLS = ("AAA", "BBB", "CCC")
DAY = "2024-01-03"  # a regular XNYS session: 14:30-21:00 UTC
OPEN = dt.datetime(2024, 1, 3, 14, 30, tzinfo=dt.UTC)
MINUTE = 60_000_000_000
T = TypeVar("T")


def ns(when: dt.datetime) -> int:
    return int(when.timestamp()) * 1_000_000_000


def at(minutes: int) -> dt.datetime:
    """The bar start ``minutes`` after the open."""
    return OPEN + dt.timedelta(minutes=minutes)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pl.DataFrame]:
    """A bar store with one session of synthetic minute bars of three symbols, and those bars."""
    root: Path = tmp_path_factory.mktemp("marketdata-store")
    frames = []
    for symbol in SYMBOLS:
        bars = synth_bars(symbol, "1m", DAY, DAY, seed=17)
        BarStore(str(root)).write_bars(symbol, "1m", bars)
        frames.append(bars.with_columns(pl.lit(symbol).alias("symbol")))
    return str(root), pl.concat(frames)


def stored(bars: pl.DataFrame, symbol: str, ts: int) -> dict[str, float]:
    """The store's bar of ``symbol`` starting at ``ts`` (int ns), as a feed row."""
    row = bars.filter((pl.col("symbol") == symbol) & (pl.col("ts").dt.epoch("ns") == ts))
    assert row.height == 1, (symbol, ts)
    return {c: float(row[c][0]) for c in ("open", "high", "low", "close", "volume")}


@pytest.fixture(autouse=True)
def _no_decoder_or_feed_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test if ib_insync could not decode a message, a request crashed inside the gateway, or the feed
    logged an exception while handling a bar."""
    caplog.set_level(logging.WARNING)
    yield
    bad = [
        r.getMessage()
        for r in caplog.records
        if (r.name.startswith(("ib_insync", "ib_async")) and "Error handling fields" in r.getMessage())
        or (r.name in ("trader.ibsim", "cluster.marketdata") and r.levelno >= logging.ERROR)
    ]
    assert not bad, bad


@pytest.fixture()
def gateway(store: tuple[str, pl.DataFrame]) -> Iterator[Callable[..., SimGateway]]:
    uri, _ = store
    with contextlib.ExitStack() as stack:

        def start(**overrides: Any) -> SimGateway:
            config = GatewayConfig(
                **{
                    "store": uri,
                    "interval": "1m",
                    "symbols": SYMBOLS,
                    "start": at(0).isoformat(),
                    **overrides,
                }
            )
            return stack.enter_context(run_gateway(config))

        yield start


def run(main: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """Run ``main()`` on a fresh event loop, failing after ``timeout`` seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout)

    return asyncio.run(bounded())


def feed_for(gw: SimGateway, client_id: int = 41, **kwargs: Any) -> GatewayBars:
    kwargs.setdefault("gap_filler", GapFillerSettings(max_retries=3, retry_interval_seconds=0.3))
    kwargs.setdefault("reconnect_backoff", (0.1, 0.5))
    kwargs.setdefault("grace_seconds", 0.5)
    return GatewayBars("127.0.0.1", gw.port, client_id, SYMBOLS, calendar=get_calendar(), **kwargs)


async def advance(gw: SimGateway, bars: int = 1) -> None:
    """Replay the next ``bars`` bars (the gateway's call blocks, so it runs off the loop)."""
    await asyncio.to_thread(gw.advance, bars)


async def next_item(items: AsyncIterator[T], timeout: float = 10.0) -> T:
    return await asyncio.wait_for(anext(items), timeout)


async def until_filled(feed: GatewayBars, timeout: float = 15.0) -> None:
    """Wait until no symbol has a missing bar left, one back-fill note at a time."""

    async def wait() -> None:
        while any(feed.missing(s) for s in SYMBOLS):
            await feed.wait_for_note("backfill", since=len(feed.log), timeout=timeout)

    await asyncio.wait_for(wait(), timeout)


# -- the simulated gateway's market-data faults ---------------------------------------------------------


def test_skipped_realtime_bar_and_refused_history_hooks(gateway) -> None:
    gw = gateway()

    async def main() -> tuple[list[dt.datetime], list[Any], dict[str, int]]:
        asyncio.set_event_loop(asyncio.get_running_loop())
        ib = IB()
        await ib.connectAsync("127.0.0.1", gw.port, clientId=7, timeout=10)
        try:
            (aaa,) = await ib.qualifyContractsAsync(IbStock("AAA", "SMART", "USD"))
            realtime = ib.reqRealTimeBars(aaa, 5, "TRADES", True)
            await ib.reqCurrentTimeAsync()  # a round trip: the subscription is in before the replay moves
            gw.skip_realtime_bar("AAA", at(2))
            await advance(gw, 3)  # bars at +1, +2 (skipped) and +3 min
            # Await updates, re-checking after each: a bar landing between the check and the await must not
            # leave the wait hanging for an update that already happened.
            deadline = asyncio.get_running_loop().time() + 10
            while len(realtime) < 2:
                assert asyncio.get_running_loop().time() < deadline, f"real-time bars: {list(realtime)}"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ib.updateEvent, 0.25)
            gw.refuse_history()
            refused = await ib.reqHistoricalDataAsync(aaa, "", "600 S", "1 min", "TRADES", True, formatDate=2)
            gw.refuse_history(False)
            served = await ib.reqHistoricalDataAsync(aaa, "", "600 S", "1 min", "TRADES", True, formatDate=2)
            return [b.time for b in realtime], [refused, served], gw.events.counts()
        finally:
            ib.disconnect()

    times, (refused, served), counts = run(main)
    assert times == [at(1), at(3)]  # the skipped one never came
    assert counts["realtime_skipped"] == 1
    assert list(refused) == [] and counts["errors:162"] == 1  # answered, with an HMDS error
    assert [b.date for b in served] == [at(k) for k in range(4)]  # the store still has the skipped bar
    assert counts["history_requests"] == 2


# -- bars from a running replay -------------------------------------------------------------------------


def test_bars_from_a_fast_replay_equal_the_stored_bars(gateway, store) -> None:
    _, bars = store
    gw = gateway(speed=600, end=at(50).isoformat())  # 10 bars a second; 50 bars from the open
    feed = feed_for(gw)
    last_emitted = ns(at(48))  # the final replayed bar (+49) has no successor to close it

    async def main() -> list[tuple[int, dict[str, dict[str, float]], list[dict[str, Any]]]]:
        await feed.start()
        got = []
        try:
            async for item in feed.bars():
                got.append(item)
                if item[0] >= last_emitted:
                    break
        finally:
            await feed.close()
        return got

    items = run(main)
    stamps = [ts for ts, _, _ in items]
    assert len(stamps) >= 25  # connecting costs a few bars of the replay (a second is 10 bars)
    assert stamps == list(range(stamps[0], last_emitted + MINUTE, MINUTE))  # every minute, in order
    for ts, rows, notes in items:
        assert sorted(rows) == list(SYMBOLS)
        for symbol in SYMBOLS:
            assert rows[symbol] == stored(bars, symbol, ts)
        assert notes == []
    for symbol in SYMBOLS:
        q = feed.quality()[symbol]["1m"]
        assert (q.expected, q.present, q.share) == (len(stamps), len(stamps), 1.0)
        kept = feed.recorded(symbol)
        assert kept["ts"].dt.epoch("ns").to_list() == stamps and not kept["late"].any()


def test_five_minute_bars_are_built_from_the_stream_aligned_to_the_open(gateway, store) -> None:
    _, bars = store
    gw = gateway()
    feed = feed_for(gw, interval="5m")

    async def main() -> list[Any]:
        await feed.start()
        items = feed.bars()
        try:
            await advance(gw, 15)  # +1 ... +15 min
            return [await next_item(items), await next_item(items)]
        finally:
            await feed.close()

    items = run(main)
    # The feed joined at +1: the part-seen interval [+0, +5) is not a decision bar; [+5, +10) is the first.
    assert [ts for ts, _, _ in items] == [ns(at(5)), ns(at(10))]
    for ts, rows, _ in items:
        for symbol in SYMBOLS:
            minutes = [stored(bars, symbol, ts + k * MINUTE) for k in range(5)]
            expected = {
                "open": minutes[0]["open"],
                "high": max(m["high"] for m in minutes),
                "low": min(m["low"] for m in minutes),
                "close": minutes[-1]["close"],
                "volume": sum(m["volume"] for m in minutes),
            }
            assert rows[symbol] == pytest.approx(expected, rel=1e-12)
    assert feed.quality()["AAA"]["5m"].share == 1.0


# -- gaps -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("library", ["ib_insync", "ib_async"])
def test_a_skipped_bar_is_a_gap_at_once_and_is_back_filled(gateway, store, library: str) -> None:
    _, bars = store
    gw = gateway()  # speed 0: bars move only when the test advances them
    gw.skip_realtime_bar("BBB", at(5))
    # A long retry interval: the first request's answer fills the gap however loaded the machine is.
    feed = feed_for(gw, client_library=library, gap_filler=GapFillerSettings(retry_interval_seconds=5.0))

    async def main() -> tuple[list[Any], dict[str, Any], list[Any]]:
        await feed.start()
        items = feed.bars()
        got = []
        try:
            await advance(gw)  # +1 min: the first bar the feed sees (+0 happened before it subscribed)
            for _ in range(6):  # each bar closes the one before: +1 ... +6
                await advance(gw)
                got.append(await next_item(items))
            fill = await feed.wait_for_note("backfill", symbol="BBB")
            quality = feed.quality()
            await advance(gw)
            after = await next_item(items)
        finally:
            await feed.close()
        return got, {"fill": fill, "quality": quality}, [after]

    got, seen, (after,) = run(main)
    assert [ts for ts, _, _ in got] == [ns(at(k)) for k in range(1, 7)]
    gap_item = got[4]
    assert gap_item[0] == ns(at(5))
    assert sorted(gap_item[1]) == ["AAA", "CCC"]  # BBB's bar is missing from the decision bar
    (gap,) = [n for n in gap_item[2] if n["kind"] == "gap"]  # detected with the interval itself
    assert (gap["symbol"], gap["start"], gap["end"], gap["bars"]) == ("BBB", ns(at(5)), ns(at(6)), 1)
    assert gap["quality"] == pytest.approx(4 / 5)  # +1..+5 expected, +5 missing
    assert all(n["kind"] != "gap" for _, _, notes in got[:4] for n in notes)
    fill = seen["fill"]
    assert fill["ts"] == ns(at(5)) and fill["bar"] == stored(bars, "BBB", ns(at(5)))
    assert fill["quality"] == 1.0 and fill["attempt"] == 1
    assert seen["quality"]["BBB"]["1m"].share == 1.0
    # The back-filled bar is reported, never emitted as a decision bar.
    assert any(n["kind"] == "backfill" for n in after[2])
    assert all("BBB" not in rows for ts, rows, _ in [*got, after] if ts == ns(at(5)))
    kept = feed.recorded("BBB").filter(pl.col("ts") == at(5))
    assert kept["late"].to_list() == [True] and kept["close"][0] == stored(bars, "BBB", ns(at(5)))["close"]


@pytest.mark.parametrize(
    ("refused", "retries"), [(True, 2), (False, 0)], ids=["history-refused", "no-retries"]
)
def test_a_gap_that_cannot_be_filled_is_given_up(gateway, refused: bool, retries: int) -> None:
    gw = gateway()
    gw.skip_realtime_bar("CCC", at(3))
    if refused:
        gw.refuse_history()
    feed = feed_for(gw, gap_filler=GapFillerSettings(max_retries=retries, retry_interval_seconds=0.2))

    async def main() -> dict[str, Any]:
        await feed.start()
        items = feed.bars()
        try:
            await advance(gw)
            for _ in range(4):
                await advance(gw)
                await next_item(items)  # +1 ... +4
            given_up = await feed.wait_for_note("gap_given_up", symbol="CCC")
            return {"given_up": given_up, "log": list(feed.log), "quality": feed.quality()}
        finally:
            await feed.close()

    out = run(main)
    given_up = out["given_up"]
    assert (given_up["start"], given_up["bars"], given_up["requests"]) == (ns(at(3)), 1, retries)
    assert given_up["quality"] < 1.0
    misses = [n["attempt"] for n in out["log"] if n["kind"] == "backfill_miss"]
    assert misses == list(range(1, retries + 1))  # every request was made and came back empty
    assert gw.events.count("history_requests") == retries
    assert not any(n["kind"] == "backfill" for n in out["log"])
    # +1..+4 expected, +3 missing for good
    assert (
        out["quality"]["CCC"]["1m"].share == pytest.approx(3 / 4) and out["quality"]["AAA"]["1m"].share == 1.0
    )


# -- connection faults ----------------------------------------------------------------------------------


def test_a_dropped_connection_is_survived_and_missed_bars_back_filled(gateway, store) -> None:
    _, bars = store
    gw = gateway(speed=600, end=at(60).isoformat())
    feed = feed_for(gw)
    last_emitted = ns(at(58))

    async def main() -> list[Any]:
        await feed.start()
        got = []
        try:
            async for item in feed.bars():
                got.append(item)
                if len(got) == 5:
                    await asyncio.to_thread(gw.drop_connections)
                    await feed.wait_for_note("reconnected")
                if item[0] >= last_emitted:
                    break
            await until_filled(feed)
        finally:
            await feed.close()
        return got

    items = run(main)
    kinds = [n["kind"] for n in feed.log]
    assert kinds.index("disconnected") < kinds.index("reconnected")
    assert feed.stats["reconnects"] == 1
    stamps = [ts for ts, _, _ in items]
    assert stamps == sorted(set(stamps))
    first = stamps[0]
    for symbol in SYMBOLS:
        kept = feed.recorded(symbol)
        live = {ts for ts, rows, _ in items if symbol in rows}
        late = set(kept.filter(pl.col("late"))["ts"].dt.epoch("ns").to_list())
        # The bar being built when the connection dropped, and those replayed while it was down, came late.
        assert late and not live & late
        assert sorted(live | late) == list(range(first, last_emitted + MINUTE, MINUTE))
        for row in kept.iter_rows(named=True):
            ts = ns(row["ts"])
            assert {k: row[k] for k in ("open", "high", "low", "close", "volume")} == stored(bars, symbol, ts)
        assert feed.quality()[symbol]["1m"].share == 1.0
    for ts, rows, _ in items:
        for symbol, row in rows.items():
            assert row == stored(bars, symbol, ts)


def test_data_lost_notice_resubscribes(gateway, store) -> None:
    _, bars = store
    gw = gateway()
    feed = feed_for(gw)

    async def main() -> list[Any]:
        await feed.start()
        items = feed.bars()
        got = []
        try:
            await advance(gw)
            await advance(gw)
            got.append(await next_item(items))  # +1
            await asyncio.to_thread(gw.announce_connectivity_restored, True)  # 1101: subscriptions are gone
            await feed.wait_for_note("resubscribed")
            for _ in range(4):
                await advance(gw)
            while got[-1][0] < ns(at(5)):
                got.append(await next_item(items))
            await until_filled(feed)
        finally:
            await feed.close()
        return got

    got = run(main)
    assert got[0][0] == ns(at(1)) and got[-1][0] == ns(at(5))
    for symbol in SYMBOLS:
        kept = feed.recorded(symbol)
        assert kept["ts"].to_list() == [at(k) for k in range(1, 6)]
        assert kept.filter(pl.col("ts") == at(2))["late"].to_list() == [True]  # interrupted: back-filled
        for row in kept.iter_rows(named=True):
            assert row["close"] == stored(bars, symbol, ns(row["ts"]))["close"]
        assert feed.quality()[symbol]["1m"].share == 1.0


def test_a_wall_clock_closes_intervals_of_a_silent_gateway(gateway) -> None:
    gw = gateway()
    now = {"ns": ns(at(0))}
    feed = feed_for(
        gw, clock=lambda: now["ns"], grace_seconds=1.0, gap_filler=GapFillerSettings(max_retries=0)
    )

    async def main() -> list[Any]:
        await feed.start()
        items = feed.bars()
        try:
            await advance(gw)
            await advance(gw)
            first = await next_item(items)  # +1, closed by the gateway's own bar at +2
            now["ns"] = ns(at(3)) + 999_000_000  # just inside the grace after +2 ended
            feed.check_clock()
            early = feed.stats["emitted"]
            now["ns"] = ns(at(3)) + 1_000_000_000
            feed.check_clock()
            second = await next_item(items)  # +2: no later bar came; the clock closed it
            now["ns"] = ns(at(6)) + 1_000_000_000  # three more minutes of silence
            feed.check_clock()
            for symbol in SYMBOLS:
                await feed.wait_for_note("gap_given_up", symbol=symbol)
            return [first, early, second, feed.take_notes()]
        finally:
            await feed.close()

    first, early, second, notes = run(main)
    assert first[0] == ns(at(1)) and early == 1 and second[0] == ns(at(2))
    assert sorted(second[1]) == list(SYMBOLS)
    gaps = sorted((n["symbol"], n["start"], n["bars"]) for n in notes if n["kind"] == "gap")
    assert gaps == [(s, ns(at(3)), 3) for s in SYMBOLS]
    assert {n["symbol"] for n in notes if n["kind"] == "gap_given_up"} == set(SYMBOLS)
    assert feed.quality()["AAA"]["1m"].share == pytest.approx(2 / 5)


# -- refusals -------------------------------------------------------------------------------------------


def test_start_refuses_unknown_symbols_and_an_absent_gateway(gateway) -> None:
    gw = gateway()
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: nothing answers on this port
        closed_port = sock.getsockname()[1]

        async def main() -> None:
            unknown = GatewayBars("127.0.0.1", gw.port, 43, ("AAA", "NOPE"))
            with pytest.raises(ContractError, match="NOPE"):
                await unknown.start()
            assert not unknown.connected
            absent = GatewayBars("127.0.0.1", closed_port, 45, ("AAA",), connect_timeout=2.0)
            with pytest.raises(BrokerConnectionError, match="cannot connect"):
                await absent.start()

        run(main)
    with pytest.raises(ConfigError, match="daily"):
        GatewayBars("127.0.0.1", gw.port, 46, ("AAA",), interval="1d")
