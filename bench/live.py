"""The live actor cluster replaying 500 symbols of 1-minute bars at maximum speed. Prints one JSON object.

    .venv/bin/python bench/live.py --symbols 50 --days 1          # a quick check (about a minute)
    .venv/bin/python bench/live.py --symbols 500 --days 1         # the issue #8 workload

Workload (issue #8): ``--symbols`` synthetic symbols (``trader.data.synth``, seed 7) of 1-minute bars over
2021-03-01..2021-03-05, written once to a local store under ``--store`` (reused when present). The paper
session (``python -m jobs.cli paper``, a subprocess with its own embedded Ray cluster) warms every symbol
with ``session.historical=2`` sessions (2021-03-01..02) and replays ``--days`` sessions from 2021-03-03 at
``--speed 0`` (as fast as possible) through the whole cluster: symbol session actors
(``session.symbols_per_actor=--per-actor``; by default the setting's auto, about two actors per CPU), the
portfolio risk actor, the execution actor with the real ib_insync client, and the simulated IB gateway inside
the coordinator. Parity settings as in the integration tests: whole shares, no slippage.

Reported (wall clock on this machine):

* ``wall_s`` (subprocess start to exit, Ray start-up included), ``setup_s`` (to the first bar's close: Ray,
  actors, warm-up), ``replay_s`` (first bar close to the last bar's risk checkpoint; first bar seen by a
  0.1 s poll), ``symbol_bars_per_s`` (bar events x symbols / replay_s);
* ``latency_ms`` from ``RUN_DIR/summary.json`` (n/p50/p90/p99/max of close_to_decision_ms: bar close to every
  symbol's target weight; close_to_intent_ms: to the risk actor's portfolio targets; intent_to_fill_ms: an
  approved order's submit to its fill as the risk actor awaits it; bar_ms: the whole bar);
* orders, fills, rejections by rule, and the gateway message rate: the most order submissions in any
  1-second window, from the submission events' timestamps in the order journal ``RUN_DIR/orders.sqlite``;
* where replay time goes: ``order_path_s`` (per bar, the longest intent-to-fill latency, summed: the risk
  actor's ``on_open`` awaits every order of the bar) against ``pacing_floor_s`` (orders /
  ``ibkr.pacing_per_second``, the execution actor's token bucket) and the rest (decisions, risk close,
  coordinator fan-out);
* memory: the peak RSS (the kernel's ``VmHWM``, read every 0.5 s) and peak private anonymous memory
  (``RssAnon``) of each actor process, the descendants of the subprocess whose title starts with
  ``ray::SymbolSessionActor``, ``ray::PortfolioRiskActor``, ``ray::ExecutionActor`` or
  ``ray::SessionCoordinator``: per kind (count, max, sum) and per symbol (the symbol actors' RSS / symbols per
  actor: mostly the interpreter, polars, numba and Ray a worker loads whatever it serves), plus PSS (shared
  pages split among their users; sampled every 5 s because the kernel walks page tables for it);
* CPU seconds by process (actors by class, Ray's daemons by name) during set-up and during the replay, and
  the benchmark's own (its /proc polling competes for the same cores).

``--set KEY=VALUE`` passes extra settings, e.g. ``--set risk.max_open_positions=500 --set
risk.max_position_pct=0.002`` to let hundreds of symbols hold positions, so that many orders fire per bar.

Target: p99 bar-close-to-intent (``close_to_intent_ms``) under 50 ms at 500 symbols of 1-minute bars in real
time (one bar a minute). At maximum speed the decision path is the same work per bar as in real time (the
coordinator runs a bar's open, its orders, then its close one after another), so its percentiles carry
over; the replay's throughput, however, is bound by the order path whenever many orders fire: every order
waits on the execution actor's token bucket (``ibkr.pacing_per_second``, 40 messages/s, under the gateway's
50) and the risk actor's order-rate guard (40 orders/s, rejecting the excess as ``order_rate``). The JSON's
``bound_by`` names the larger share of replay time: the order path (bars' orders, from first submit to last
fill) or the per-bar work (gateway price updates, decisions, the risk actor's close, the coordinator);
``order_path_bound_by`` says whether the order path sits at the pacing floor (0.8x to 1.5x of orders / pacing
rate), above it (round trips: submit, fill, journal) or below it (each bar's orders fit the bucket's burst).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: The store's span: two history sessions then up to three replay sessions (2021-03-01 is a Monday).
STORE_START, STORE_END = "2021-03-01", "2021-03-05"
REPLAY_START = dt.date(2021, 3, 3)
ACTOR_KINDS = ("SymbolSessionActor", "PortfolioRiskActor", "ExecutionActor", "SessionCoordinator")


def build_store(uri: str, n_symbols: int) -> dict[str, Any]:
    """Write the missing symbols' 1-minute bars (seed 7) to the store at ``uri``; returns names and timing."""
    from trader.data.synth import fill_synth_store

    return fill_synth_store(uri, "1m", n_symbols, STORE_START, STORE_END, seed=7)


# -- process memory ----------------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc/<pid>/stat (field 4; the name in field 2 may hold spaces)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue  # exited between listdir and open
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _descendants(root: int) -> list[int]:
    children, out, todo = _children_map(), [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _actor_kind(pid: int) -> str | None:
    """The actor class a Ray worker holds, from its title (``ray::Class`` or ``ray::Class.method``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            title = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    for kind in ACTOR_KINDS:
        if title.startswith(f"ray::{kind}"):
            return kind
    return None


def _memory_kb(pid: int, pss: bool) -> dict[str, int]:
    """VmHWM (peak RSS), VmRSS and RssAnon from /proc/<pid>/status, and with ``pss`` the proportional set
    size from smaps_rollup (kB; shared pages split among their users, so sums do not double count)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon"):
                    out[key] = int(value.split()[0])
        if pss:  # the kernel walks the page tables for this: ~1 ms a process, so sampled less often
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        out["Pss"] = int(line.split()[1])
    except OSError:
        pass
    return out


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (/proc/<pid>/stat fields 14 and 15)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _title(pid: int) -> str:
    """A short name for a process that is not an actor: Ray's daemons by executable, idle Ray workers."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return "?"
    first = argv[0].decode(errors="replace")
    if first.startswith("ray::"):
        return "ray worker (no actor)"
    if first.endswith("python") or "python3" in first:
        script = next((a.decode(errors="replace") for a in argv[1:] if a.endswith(b".py")), "")
        return f"python {os.path.basename(script)}".strip()
    return os.path.basename(first.split()[0]) if first else "?"


class ProcessWatch:
    """Peak memory and CPU time of the processes under one root pid (see the module docstring)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.kind: dict[int, str] = {}
        self.peak_kb: dict[int, int] = {}
        self.anon_kb: dict[int, int] = {}
        self.pss_kb: dict[int, int] = {}
        self.cpu: dict[int, float] = {}  # last reading; a process's CPU time only grows
        self.total_pss_peak_kb = 0  # all descendants' PSS at one poll (Ray's own daemons included)

    def poll(self, pss: bool = False) -> None:
        """Read every descendant's memory and CPU time; ``pss`` also samples PSS (costly: see _memory_kb)."""
        total = 0
        for pid in [self.root, *_descendants(self.root)]:
            mem = _memory_kb(pid, pss)
            cpu = _cpu_s(pid)
            if not mem or cpu is None:
                continue  # exited meanwhile
            total += mem.get("Pss", 0)
            kind = self.kind.get(pid)
            if kind not in ACTOR_KINDS:  # a Ray worker takes its actor's title when the actor starts
                kind = _actor_kind(pid) or ("driver" if pid == self.root else _title(pid))
            self.kind[pid] = kind
            self.cpu[pid] = cpu
            self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), mem.get("VmHWM", 0), mem.get("VmRSS", 0))
            self.anon_kb[pid] = max(self.anon_kb.get(pid, 0), mem.get("RssAnon", 0))
            self.pss_kb[pid] = max(self.pss_kb.get(pid, 0), mem.get("Pss", 0))
        if pss:
            self.total_pss_peak_kb = max(self.total_pss_peak_kb, total)

    def memory(self, per_actor: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in ACTOR_KINDS:
            pids = [p for p, k in self.kind.items() if k == kind]
            if not pids:
                continue
            peaks = [self.peak_kb[p] / 1024 for p in pids]
            out[kind] = {
                "processes": len(pids),
                "peak_rss_mb_max": round(max(peaks), 1),
                "peak_rss_mb_min": round(min(peaks), 1),
                "peak_rss_mb_sum": round(sum(peaks), 1),
                "peak_anon_mb_max": round(max(self.anon_kb[p] for p in pids) / 1024, 1),
                "peak_pss_mb_sum": round(sum(self.pss_kb[p] for p in pids) / 1024, 1),
            }
        symbols = out.get("SymbolSessionActor")
        if symbols:
            # The whole actor process (interpreter, polars, numba, Ray worker) over the symbols it serves.
            symbols["rss_mb_per_symbol"] = round(symbols["peak_rss_mb_max"] / per_actor, 2)
            symbols["anon_mb_per_symbol"] = round(symbols["peak_anon_mb_max"] / per_actor, 2)
        out["all_descendants_pss_mb_peak"] = round(self.total_pss_peak_kb / 1024, 1)
        return out

    def cpu_seconds(
        self, upto: dict[int, float] | None = None, since: dict[int, float] | None = None
    ) -> dict[str, float]:
        """CPU seconds by process kind (actors by class, Ray's daemons by name), largest first: up to the
        snapshot ``upto`` (an earlier ``dict(self.cpu)``; default now), less what was used by ``since``."""
        out: dict[str, float] = {}
        for pid, seconds in (self.cpu if upto is None else upto).items():
            used = seconds - (since or {}).get(pid, 0.0)
            out[self.kind[pid]] = out.get(self.kind[pid], 0.0) + used
        return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.5}


# -- reading the run ---------------------------------------------------------------------------------------


def max_in_window(times: list[float], width: float = 1.0) -> int:
    """The most timestamps (seconds) in any half-open window ``[t, t + width)``.

    >>> max_in_window([0.0, 0.2, 0.9, 1.0, 1.5])
    3
    """
    ordered, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def journal_figures(path: Path) -> dict[str, Any]:
    """Order submissions and the gateway message rate from the order journal (SQLite)."""
    from trader.broker.journal import OrderJournal

    with OrderJournal(str(path), readonly=True) as journal:
        submissions = journal.events(kinds=["submission"])
        cancels = [e for e in journal.events(kinds=["status"]) if str(e.payload.get("status")) == "Cancelled"]
        n_events = journal.last_seq()
    times = [e.ts.timestamp() for e in submissions]
    span = (max(times) - min(times)) if len(times) > 1 else 0.0
    return {
        "submissions": len(times),
        "max_orders_in_1s": max_in_window(times),
        "mean_orders_per_s_while_sending": round(len(times) / span, 2) if span > 0 else None,
        "cancelled": len(cancels),
        "journal_events": n_events,
    }


def order_path(events_path: Path) -> dict[str, Any]:
    """Per bar, the longest intent-to-fill latency (the risk actor awaits all of a bar's orders), summed."""
    per_bar: dict[Any, float] = {}
    orders_per_bar: dict[Any, int] = {}
    with open(events_path, encoding="utf-8") as fh:
        for line in fh:
            event = json.loads(line)
            if event.get("kind") != "intent":
                continue
            ts = event["ts"]  # the bar the order trades (int ns, or its ISO text)
            orders_per_bar[ts] = orders_per_bar.get(ts, 0) + 1
            if "latency_ms" in event:
                per_bar[ts] = max(per_bar.get(ts, 0.0), float(event["latency_ms"]))
    return {
        "order_path_s": round(sum(per_bar.values()) / 1e3, 2),
        "bars_with_orders": len(orders_per_bar),
        "max_intents_in_one_bar": max(orders_per_bar.values(), default=0),
    }


def _order_bound(order_path_s: float, pacing_floor_s: float, pacing: float) -> str:
    """What limits the order path: the token bucket when it runs near orders / rate; below that floor the
    bars' bursts fit the bucket (it holds 50 - ``pacing`` tokens and refills at ``pacing`` a second), above
    1.5x of it the round trips dominate."""
    if order_path_s < 0.8 * pacing_floor_s:
        return f"neither: each bar's orders fit the pacing burst ({max(1.0, 50 - pacing):g} + {pacing:g}/s)"
    if order_path_s <= 1.5 * pacing_floor_s:
        return f"pacing ({pacing:g} orders/s)"
    return "round trips (submit, fill, journal)"


# -- the run -----------------------------------------------------------------------------------------------


def run_paper(args: argparse.Namespace, symbols: list[str], run_dir: Path) -> dict[str, Any]:
    """Run ``python -m jobs.cli paper`` as a subprocess while watching its actors; returns the figures."""
    from trader.calendar import get_calendar

    calendar = get_calendar("XNYS")
    days = list(calendar.sessions(REPLAY_START, dt.date(2021, 3, 5)))[: args.days]
    overrides = [
        "engine.fractional_shares=false",
        "costs.slippage_bps=0",
        "session.historical=2",
        f"session.speed_multiplier={args.speed:g}",
        *([f"session.symbols_per_actor={args.per_actor}"] if args.per_actor else []),
        f"ray.namespace=bench-live-{os.getpid()}",
        *args.overrides,
    ]
    command = [sys.executable, "-m", "jobs.cli", "paper", "--config", "configs/base.yaml"]
    command += ["--config", "configs/demo.yaml"]
    for item in overrides:
        command += ["--set", item]
    command += ["--replay", f"{days[0]}:{days[-1]}", "--speed", f"{args.speed:g}"]
    command += ["--symbols", ",".join(symbols)]
    command += ["--store", args.store, "--interval", "1m", "--out", str(run_dir)]
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache/bench"))
    log = run_dir.parent / "paper.log"
    risk_checkpoint = run_dir / "checkpoints" / "risk.json"
    with open(log, "wb") as out:
        t0 = time.time()
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        watch = ProcessWatch(proc.pid)
        cpu_at_first_bar: dict[int, float] = {}
        first_bar: float | None = None
        ticks = 0
        while proc.poll() is None:
            if first_bar is None and risk_checkpoint.exists():
                first_bar = time.time()  # the risk actor checkpoints at every bar close
                watch.poll()
                cpu_at_first_bar = dict(watch.cpu)
            if ticks % 5 == 0:
                watch.poll(pss=ticks % 50 == 0)  # memory and CPU every 0.5 s, PSS every 5 s
            ticks += 1
            if time.time() - t0 > args.timeout:
                os.killpg(proc.pid, signal.SIGTERM)  # our own subprocess's group only
                proc.wait(30)
                tail = log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"paper run passed --timeout {args.timeout}s; its log ends:\n{tail}")
            time.sleep(0.1)
        wall = time.time() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"paper run failed (exit {proc.returncode}):\n{tail}")
    summary = json.loads((run_dir / "summary.json").read_text())
    actors = run_dir / "checkpoints" / "actors.json"  # written when the coordinator chose the sharding
    per_actor = json.loads(actors.read_text())["symbols_per_actor"] if actors.is_file() else args.per_actor
    last_bar = dt.datetime.fromisoformat(json.loads(risk_checkpoint.read_text())["at"]).timestamp()
    replay = last_bar - (first_bar if first_bar is not None else t0)
    symbol_bars = int(summary["decisions"])
    path = order_path(run_dir / "events.jsonl")
    journal = journal_figures(run_dir / "orders.sqlite")
    from trader.config import load_settings

    files = [REPO / "configs/base.yaml", REPO / "configs/demo.yaml"]
    pacing = float(load_settings(files, overrides, env={}).ibkr.pacing_per_second)
    pacing_floor = journal["submissions"] / pacing
    rest = max(0.0, replay - path["order_path_s"])
    return {
        "symbols_per_actor": per_actor,
        "replay": [str(days[0]), str(days[-1])],
        "sessions": len(summary["sessions"]),
        "bar_events": summary["bars"],
        "wall_s": round(wall, 2),
        "setup_s": round((first_bar or t0) - t0, 2),
        "replay_s": round(replay, 2),
        "bar_events_per_s": round(summary["bars"] / replay, 2) if replay > 0 else None,
        "symbol_bars_per_s": round(symbol_bars / replay, 1) if replay > 0 else None,
        "latency_ms": summary["latency_ms"],
        "decisions": summary["decisions"],
        "intents": summary["intents"],
        "approved": summary["approved"],
        "rejected_by_rule": summary["rejected_by_rule"],
        "orders": summary["orders"],
        "fills": summary["fills"],
        "gateway": {**journal, "pacing_per_second": pacing},
        "time_split": {
            **path,
            "pacing_floor_s": round(pacing_floor, 2),
            "per_bar_work_s": round(rest, 2),
            "order_path_share": round(path["order_path_s"] / replay, 3) if replay > 0 else None,
        },
        "bound_by": "order path" if path["order_path_s"] > rest else "per-bar work",
        "order_path_bound_by": _order_bound(path["order_path_s"], pacing_floor, pacing),
        "memory": watch.memory(per_actor),
        # CPU seconds by process over the replay (first bar to exit): who uses the machine's cores.
        "cpu_s_setup": watch.cpu_seconds(upto=cpu_at_first_bar),
        "cpu_s_replay": watch.cpu_seconds(since=cpu_at_first_bar),
        "log": str(log) if args.keep else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500, help="synthetic symbols (SYN000...)")
    parser.add_argument("--days", type=int, default=1, choices=[1, 2, 3], help="sessions replayed")
    parser.add_argument(
        "--speed", type=float, default=0.0, help="x real time (0 = as fast as possible; 60 = a bar a second)"
    )
    parser.add_argument(
        "--per-actor", type=int, default=None, help="session.symbols_per_actor (default: the setting's auto)"
    )
    parser.add_argument("--store", default=str(REPO / "bench/.store-live"), help="store folder")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds before the run is killed")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra setting for the session, e.g. risk.max_open_positions=500 (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run folder and print its path")
    args = parser.parse_args(argv)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache/bench"))

    built = build_store(args.store, args.symbols)
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: say how much there was
    work = Path(tempfile.mkdtemp(prefix="live-bench-"))
    try:
        figures = run_paper(args, built["symbols"], work / "run")
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    report = {
        "symbols": args.symbols,
        "overrides": args.overrides,
        "interval": "1m",
        "speed": args.speed,
        "store_build_s": built["store_build_s"],
        "bars_written": built["bars_written"],
        **figures,
        "run_dir": str(work / "run") if args.keep else None,
        "loadavg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "bench_cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
