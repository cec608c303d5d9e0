"""Symbol session actors: each holds the session state and decisions of one symbol or a shard of symbols.

An actor is a process, so one actor serves ``session.symbols_per_actor`` symbols (one per symbol on a large
cluster, a handful of actors for hundreds of symbols on one machine); each symbol's state is independent and
checkpointed on its own. On each bar close it appends the bar and decides the symbol's target weight exactly
as the backtest does (:class:`trader.live.decide.Decider`): that weight is the symbol's order intent, which
the portfolio risk actor sizes, approves or rejects.

Checkpoints (``RUN_DIR/checkpoints/symbols/<SYMBOL>.json``: the first and last bar the decider holds, bars
seen, the last decision) are written every ``checkpoint_every`` bars and at the end of each session. After a
restart the actor restores them in ``__init__`` and rebuilds each decider from the bar store over the same
span, so its next decision is the one it would have made without the restart; a bar it already processed
(a retried call) is skipped, never decided twice.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import os
import time
from typing import Any

from trader.errors import DataError
from trader.rundir import RunDir, json_safe

__all__ = ["SymbolSessionActor"]


class SymbolSessionActor:
    """See the module docstring. Methods are coroutines; the session coordinator builds and drives it."""

    def __init__(
        self,
        settings: Any,
        symbols: list[str],
        run_dir: str,
        *,
        store: str,
        interval: str,
        strategy: str | None = None,
        params: dict[str, Any] | None = None,
        checkpoint_every: int = 30,
        checkpoint_phase: int = 0,
    ) -> None:
        from trader.live.decide import Decider

        self.settings, self.symbols = settings, list(symbols)
        self.run, self.store_uri, self.interval = RunDir(run_dir), store, interval
        self.checkpoint_every = int(checkpoint_every)
        self.deciders = {
            s: Decider(s, settings, strategy=strategy, params=params, interval=interval) for s in self.symbols
        }
        self.data = self._session_data(settings, interval)
        self.decisions = dict.fromkeys(self.symbols, 0)
        self.restored: list[str] = []
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None
        self._writing: concurrent.futures.Future[None] | None = None
        self.warmup_quality: dict[str, dict[str, float]] = {}
        # Actors checkpoint on different bars (phase), so their disk writes do not all land on one bar.
        self._since_checkpoint = int(checkpoint_phase) % max(1, self.checkpoint_every)
        self._restore()

    def _session_data(self, settings: Any, interval: str) -> dict[str, Any]:
        """Per symbol, the streams built from the bars and their quality (intraday base bars only)."""
        if interval == "1d":
            return {}
        from trader.calendar import get_calendar
        from trader.session import SessionData

        streams = sorted({interval, *settings.session.streams} - {"1d"}) or [interval]
        calendar = get_calendar(settings.data.exchange)
        return {s: SessionData(s, streams, calendar=calendar) for s in self.symbols}

    def _path(self, symbol: str) -> str:
        return f"checkpoints/symbols/{symbol}.json"

    def _restore(self) -> None:
        from trader.data.store import BarStore

        for symbol in self.symbols:
            if not self.run.exists(self._path(symbol)):
                continue
            saved = self.run.read_json(self._path(symbol))
            if saved.get("first_ts") is None:
                continue
            start = dt.datetime.fromtimestamp(saved["first_ts"] / 1e9, dt.UTC)
            end = dt.datetime.fromtimestamp(saved["last_ts"] / 1e9, dt.UTC) + dt.timedelta(microseconds=1)
            bars = BarStore(self.store_uri).read_bars([symbol], self.interval, start, end)
            self.deciders[symbol].warm(bars)
            self.decisions[symbol] = int(saved.get("decisions", 0))
            if self.deciders[symbol].last_ts != saved["last_ts"]:
                raise RuntimeError(
                    f"{symbol}: the store's bars end at {self.deciders[symbol].last_ts}, the checkpoint at "
                    f"{saved['last_ts']}; cannot restore the session state"
                )
            self.restored.append(symbol)

    async def warm(self, history: dict[str, Any]) -> dict[str, int]:
        """Load each symbol's history frame (bars before the session) unless restored from a checkpoint."""
        out = {}
        for symbol, frame in history.items():
            if symbol in self.restored or frame is None:
                out[symbol] = len(self.deciders[symbol])
                continue
            self.deciders[symbol].warm(frame)
            data = self.data.get(symbol)
            if data is not None and frame.height:
                # Streams, historical indicators (20-day volume...) and warm-up quality from the history.
                with contextlib.suppress(DataError):
                    self.warmup_quality[symbol] = {
                        iv: q.share for iv, q in data.warm_up(frame.drop("symbol", strict=False)).items()
                    }
            out[symbol] = len(self.deciders[symbol])
        for decider in self.deciders.values():
            decider.decide()  # loads the compiled kernels now, not on the session's first bar
        return out

    async def on_bars(
        self, ts: int, bars: dict[str, tuple[float, float, float, float, float]], prev_ts: int | None = None
    ) -> dict[str, Any]:
        """Append each symbol's bar closing now and decide.

        Returns ``{"targets": {symbol: weight}, "decided": [symbols decided on this bar], "seconds": ...}``.
        A bar at or before a symbol's last one is skipped (a replayed call after a restart): its target is
        the last one and it is not in ``decided``.
        """
        started = time.perf_counter()
        targets: dict[str, float] = {}
        decided: list[str] = []
        for symbol, row in bars.items():
            decider = self.deciders[symbol]
            if decider.last_ts is not None and ts <= decider.last_ts:
                targets[symbol] = decider.last_target
                continue
            if prev_ts is not None and decider.last_ts is not None and decider.last_ts < prev_ts:
                self._catch_up(symbol, decider.last_ts, ts)  # restored from an older checkpoint
            targets[symbol] = decider.on_bar(ts, *row)
            self._stream(symbol, ts, row)
            self.decisions[symbol] += 1
            decided.append(symbol)
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.checkpoint_every:
            self._checkpoint_behind()
        return {"targets": targets, "decided": decided, "seconds": time.perf_counter() - started}

    def _catch_up(self, symbol: str, after: int, before: int) -> None:
        """Append the stored bars in (after, before): what this symbol missed between checkpoint and now."""
        from trader.data.store import BarStore

        start = dt.datetime.fromtimestamp(after / 1e9, dt.UTC) + dt.timedelta(microseconds=1)
        end = dt.datetime.fromtimestamp(before / 1e9, dt.UTC)
        missed = BarStore(self.store_uri).read_bars([symbol], self.interval, start, end)
        decider = self.deciders[symbol]
        ts = missed["ts"].dt.epoch("ns").to_numpy()
        cols = [missed[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
        for k in range(missed.height):
            if decider.last_ts is None or int(ts[k]) > decider.last_ts:
                decider.on_bar(int(ts[k]), *(float(c[k]) for c in cols))
                self.decisions[symbol] += 1

    def _stream(self, symbol: str, ts: int, row: tuple[float, ...]) -> None:
        data = self.data.get(symbol)
        if data is None:
            return
        from trader.session import Bar

        # A bar the streams cannot place (off the session grid) is skipped there; decisions go on.
        with contextlib.suppress(DataError):
            data.on_bar(Bar(ts, *row, interval=data.base))

    def _snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            symbol: json_safe(
                {
                    "symbol": symbol,
                    "first_ts": decider.first_ts,
                    "last_ts": decider.last_ts,
                    "bars": len(decider),
                    "decisions": self.decisions[symbol],
                    "last_target": decider.last_target,
                    # Bandit mode: the arm of the last decision and the posterior after the last bar.
                    "arm": decider.arm,
                    "posteriors": None if decider.posteriors is None else decider.posteriors.to_dict(),
                    "at": dt.datetime.now(dt.UTC).isoformat(),
                }
            )
            for symbol, decider in self.deciders.items()
        }

    def _write(self, snapshot: dict[str, dict[str, Any]]) -> None:
        for symbol, state in snapshot.items():
            self.run.write_json(self._path(symbol), state)

    def checkpoint(self) -> None:
        """Write each symbol's checkpoint now (atomic per file), after any checkpoint still being written."""
        if self._writing is not None:
            self._writing.result()
        self._write(self._snapshot())
        self._since_checkpoint = 0

    def _checkpoint_behind(self) -> None:
        # On the bar path: take the state now, write the files on a thread (file I/O releases the GIL), so
        # the bar's reply does not wait for the disk. One writer thread keeps checkpoints in order; a crash
        # that loses one only means a restart catches up from an older one (see _catch_up).
        if self._writing is not None:
            if not self._writing.done():
                return  # the previous one is still being written: this bar's state goes with the next one
            self._writing.result()  # a failed write surfaces here, as it would have written inline
        if self._writer is None:
            self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._writing = self._writer.submit(self._write, self._snapshot())
        self._since_checkpoint = 0

    async def end_session(self) -> None:
        """End of session: checkpoint every symbol."""
        self.checkpoint()

    async def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "symbols": {
                s: {
                    "bars": len(d),
                    "last_ts": d.last_ts,
                    "target": d.last_target,
                    "decisions": self.decisions[s],
                }
                for s, d in self.deciders.items()
            },
            "restored": self.restored,
            "warmup_quality": self.warmup_quality,
            "quality": {
                s: {iv: d.quality(iv).share for iv in d.streams} for s, d in self.data.items() if d.session
            },
        }
