"""An Optuna sweep on Ray at scale: throughput, driver memory, scheduling overhead. Prints one JSON object.

    .venv/bin/python bench/sweep.py                                  # 200 trials x 16 folds x 50 symbols
    .venv/bin/python bench/sweep.py --trials 40 --symbols 10         # a quick look

Workload (issue #7): 5 years (2020-01-01..2024-12-31) of synthetic daily bars (``trader.data.synth``, seed 7)
for ``SYN000..`` in a local store under ``--store`` (the walk-forward bench's store is reused; missing symbols
are written), settings ``configs/base.yaml`` + ``configs/demo.yaml`` with walk-forward train 252 / test 63 /
stride 63 / purge 5 sessions and the truncated final fold allowed (16 folds over 1,257 sessions; 15 without
it, ``--no-truncated-fold``), no per-fold tuning (``walkforward.grid_size=1``), a TPE sampler over
``composer.lookback`` (10..100 bars, step 10), ``composer.temperature`` (0.25..4, log scale) and
``composer.min_confidence`` (0..0.3, a fraction of the blended signal), the median pruner and 4 trials in
flight unless told otherwise.

The sweep runs as a subprocess, exactly as a user runs it (``python -m jobs.cli sweep ... --no-progress``,
which starts its own embedded Ray cluster of ``--cpus`` CPUs). Every 0.5 s this script reads the driver's
resident memory (``/proc/<pid>/status`` VmRSS; the driver process only, not Ray's raylet/GCS/workers) and the
number of finished trials (complete, pruned or failed) from the study's journal, opened read-only. Reported:

* ``wall_s``: subprocess start to exit (Python start-up, Ray start-up, the trials, the summary and report);
  ``phases_s``: start-up (imports, until the journal exists), Ray start (until the driver logs that it is
  connected), first trial (until one has finished: bar loads, worker start-up, the first trials' tasks),
  trials (first to last finished), finish (last trial to exit: PBO, DSR, ``trials.parquet``, ``sweep.html``).
* ``trials_per_minute``: over the driver's own ``wall_seconds`` (Ray start-up to the last trial told) and
  ``steady_trials_per_minute`` between the first and last memory milestone.
* ``counts``: complete / pruned / failed; ``n_folds`` of the plan (from ``sweep_manifest.json``).
* ``driver_rss_mb``: at 1/8, 1/4, 1/2, 3/4 and all of the trials finished (25, 50, 100, 150, 200 for 200
  trials), ``driver_rss_slope_mb_per_100_trials`` (least-squares line through every sample from the first
  milestone to the last), ``driver_peak_rss_mb`` (VmHWM, the finish phase included) and
  ``driver_peak_rss_mb_during_trials`` (VmHWM when the last trial finished).
* ``cpu_s``: CPU seconds (user + system) of the driver, of Ray's task workers and of Ray's own processes
  (raylet, GCS, dashboard, agents), sampled with the memory. Worker CPU well below ``task_seconds`` means
  tasks waited for a core (the driver, Ray or other users of the machine had it).
* ``scheduling_overhead`` (``1 - task_seconds / (wall_seconds * cpus)``), ``task_seconds``, ``cpus``, the best
  score, PBO and the deflated Sharpe ratio of the best trial, all from the run's ``summary.json``;
  ``scheduling_overhead_excl_ray_start``: the same with the Ray start-up phase taken out of the wall time
  (a fixed cost that a long sweep or a running cluster does not pay per trial).

Targets: driver RSS flat as trials grow (slope at most 5 MB per 100 trials); scheduling overhead under 10 %.
``targets_met`` says whether this run met them; ``load_avg`` (1-minute load average at start and end) tells
whether other work on the machine competed for its cores (overhead counts CPU time lost to them too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Fractions of --trials at which the driver's RSS is reported (25/50/100/150/200 of 200).
MILESTONES = (0.125, 0.25, 0.5, 0.75, 1.0)
POLL_S = 0.5
STUDY = "bench-sweep"
SPACE = (
    "sweep.space={"
    "composer.lookback: {low: 10, high: 100, step: 10}, "
    "composer.temperature: {low: 0.25, high: 4.0, log: true}, "
    "composer.min_confidence: {low: 0.0, high: 0.3}}"
)


def build_store(uri: str, n_symbols: int) -> dict[str, Any]:
    """Write the daily bars of ``SYN000..`` that the store lacks; return the names and what it cost."""
    from trader.data.synth import fill_synth_store

    return fill_synth_store(uri, "1d", n_symbols, "2020-01-01", "2024-12-31", seed=7)


def sweep_command(args: argparse.Namespace, symbols: list[str], out: str) -> list[str]:
    """The ``trader sweep`` command line the bench runs (``--keep`` leaves its run folder to look into)."""
    sets = [
        "walkforward.train_len=252",
        "walkforward.test_len=63",
        "walkforward.stride=63",
        "walkforward.purge=5",
        f"walkforward.allow_truncated_final_fold={'true' if args.truncated_fold else 'false'}",
        "walkforward.grid_size=1",
        "sweep.sampler=tpe",
        f"sweep.pruner={args.pruner}",
        f"sweep.concurrency={args.concurrency}",
        f"sweep.study_name={STUDY}",
        SPACE,
        f"ray.num_cpus={args.cpus}",
    ]
    cmd = [sys.executable, "-m", "jobs.cli", "sweep"]
    cmd += ["--config", str(REPO / "configs/base.yaml"), "--config", str(REPO / "configs/demo.yaml")]
    for item in sets:
        cmd += ["--set", item]
    cmd += ["--symbols", ",".join(symbols), "--store", args.store, "--interval", "1d"]
    cmd += ["--trials", str(args.trials), "--out", out, "--no-progress"]
    return cmd


def process_tree_cpu(root: int, seen: dict[int, tuple[str, float]]) -> None:
    """Update ``seen`` (pid -> (role, CPU seconds so far)) for ``root`` and every descendant still alive.

    Roles: ``driver`` (root), ``worker`` (Ray task workers: ``ray::...`` titles or ``default_worker.py``),
    ``system`` (raylet, GCS, dashboard, agents, log monitor). A process that exits between two polls keeps
    its last reading, so up to one poll interval of its CPU is missed.
    """
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
        parent[int(entry.name)] = int(fields[1])
        stats[int(entry.name)] = fields
    tree = {root}
    grew = True
    while grew:  # the tree is shallow (driver -> raylet -> workers), so a few passes suffice
        extra = {pid for pid, ppid in parent.items() if ppid in tree and pid not in tree}
        tree |= extra
        grew = bool(extra)
    for pid in tree:
        fields = stats.get(pid)
        if fields is None:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if pid in seen:
            seen[pid] = (seen[pid][0], cpu)
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = ""
        role = (
            "driver" if pid == root else "worker" if ("ray::" in cmd or "default_worker" in cmd) else "system"
        )
        seen[pid] = (role, cpu)


def proc_memory_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a live process in MB, or None once it has gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    found = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(rest.split()[0]) / 1024  # kB -> MB
    if "VmRSS" not in found:  # a zombie has no memory lines
        return None
    return found["VmRSS"], found.get("VmHWM", found["VmRSS"])


class TrialCounter:
    """Counts the study's finished trials (complete, pruned, failed) in its journal file, read-only.

    The journal is only opened once the driver has created it (opening it earlier would create the file, and
    the driver refuses a run folder that already holds a journal). JournalStorage reads only the lines
    appended since the last call, and skips a half-written last line.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.storage: Any = None
        self.study_id: int | None = None

    def finished(self) -> int:
        import optuna
        from optuna.storages.journal import JournalFileBackend
        from optuna.trial import TrialState

        if self.storage is None:
            if not self.path.exists():
                return 0
            self.storage = optuna.storages.JournalStorage(JournalFileBackend(str(self.path)))
        if self.study_id is None:
            try:
                self.study_id = self.storage.get_study_id_from_name(STUDY)
            except KeyError:  # the study is not created yet
                return 0
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return len(self.storage.get_all_trials(self.study_id, deepcopy=False, states=states))


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the sweep: SIGINT first (the driver shuts Ray down), then SIGTERM to its process group."""
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # the group this script created for the sweep (see Popen)
    proc.wait(timeout=30)


def slope_per_100(samples: list[tuple[float, int, float]], lo: int, hi: int) -> float | None:
    """Least-squares slope of RSS (MB) on finished trials, times 100, over samples with lo <= n <= hi."""
    pts = [(n, rss) for _, n, rss in samples if lo <= n <= hi]
    if len({n for n, _ in pts}) < 2:
        return None
    mx = sum(n for n, _ in pts) / len(pts)
    my = sum(r for _, r in pts) / len(pts)
    sxx = sum((n - mx) ** 2 for n, _ in pts)
    sxy = sum((n - mx) * (r - my) for n, r in pts)
    return round(100.0 * sxy / sxx, 2)


def run_sweep_subprocess(args: argparse.Namespace, symbols: list[str]) -> dict[str, Any]:
    """Run the sweep, polling its driver; return the figures (see the module docstring)."""
    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    out = work / "run"
    log_path = work / "sweep.log"
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba_cache/bench")),
    }
    cmd = sweep_command(args, symbols, str(out))
    targets = sorted({max(1, round(args.trials * f)) for f in MILESTONES})
    counter = TrialCounter(out / "study.journal")
    # (seconds since start, finished trials, RSS MB) while trials run: the finish phase (PBO, report) is
    # left out of the slope, it is a one-off after the last trial, not growth per trial.
    samples: list[tuple[float, int, float]] = []
    at: dict[int, dict[str, float]] = {}
    peak = 0.0
    hwm_at_last = None
    cpu: dict[int, tuple[str, float]] = {}
    t_journal = t_ray = t_first = t_last = None
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        # Its own session (process group): if this script is interrupted, the driver and the Ray processes it
        # started are stopped together, and nothing else.
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while proc.poll() is None:
                now = time.perf_counter() - t0
                mem = proc_memory_mb(proc.pid)
                n = counter.finished()
                if t_journal is None and counter.storage is not None:
                    t_journal = now
                if t_ray is None and b"connected to Ray" in log_path.read_bytes():
                    t_ray = now  # cluster.runtime logs this once the embedded cluster is up
                if mem is not None:
                    rss, hwm = mem
                    peak = max(peak, hwm)
                    if t_last is None:
                        samples.append((now, n, rss))
                    for m in targets:
                        if m not in at and n >= m:
                            at[m] = {"rss_mb": round(rss, 1), "t_s": round(now, 1)}
                if n >= 1 and t_first is None:
                    t_first = now
                if n >= args.trials and t_last is None:
                    t_last = now
                    hwm_at_last = peak
                process_tree_cpu(proc.pid, cpu)
                time.sleep(POLL_S)
        except BaseException:
            if proc.poll() is None:  # interrupted: do not leave the sweep (and its Ray cluster) running
                stop_group(proc)
            shutil.rmtree(work, ignore_errors=True)
            raise
    wall = time.perf_counter() - t0
    tail = log_path.read_text(errors="replace")[-3000:]
    summary_path = out / "summary.json"
    if proc.returncode != 0 or not summary_path.exists():
        raise SystemExit(json.dumps({"error": f"sweep exited {proc.returncode}", "log_tail": tail}))
    summary = json.loads(summary_path.read_text())
    manifest = json.loads((out / "sweep_manifest.json").read_text())
    n_trials_done = summary["this_run"]["complete"] + summary["this_run"]["pruned"]
    n_trials_done += summary["this_run"]["failed"]
    first_m, last_m = targets[0], targets[-1]
    steady = None
    if first_m in at and last_m in at and at[last_m]["t_s"] > at[first_m]["t_s"]:
        steady = round(60.0 * (last_m - first_m) / (at[last_m]["t_s"] - at[first_m]["t_s"]), 2)
    ray_free = None
    if t_ray is not None and t_journal is not None:
        span = summary["wall_seconds"] - (t_ray - t_journal)
        if span > 0:
            ray_free = round(max(0.0, 1.0 - summary["task_seconds"] / (span * summary["cpus"])), 4)
    best = summary.get("best") or {}
    result = {
        "wall_s": round(wall, 2),
        "phases_s": {
            "startup": None if t_journal is None else round(t_journal, 1),
            "ray_start": None if t_ray is None or t_journal is None else round(t_ray - t_journal, 1),
            "first_trial": None if t_first is None or t_ray is None else round(t_first - t_ray, 1),
            "trials": None if t_first is None or t_last is None else round(t_last - t_first, 1),
            "finish": None if t_last is None else round(wall - t_last, 1),
        },
        "driver_wall_seconds": summary["wall_seconds"],
        "trials_per_minute": round(60.0 * n_trials_done / summary["wall_seconds"], 2),
        "steady_trials_per_minute": steady,
        "counts": {k: summary["this_run"][k] for k in ("complete", "pruned", "failed")},
        "n_folds": manifest["n_folds"],
        "driver_rss_mb": {str(m): at.get(m) for m in targets},
        "driver_rss_slope_mb_per_100_trials": slope_per_100(samples, first_m, last_m),
        "driver_peak_rss_mb": round(peak, 1),
        "driver_peak_rss_mb_during_trials": None if hwm_at_last is None else round(hwm_at_last, 1),
        "cpu_s": {
            role: round(sum(c for r, c in cpu.values() if r == role), 1)
            for role in ("driver", "worker", "system")
        },
        "scheduling_overhead": summary["scheduling_overhead"],
        "scheduling_overhead_excl_ray_start": ray_free,
        "task_seconds": summary["task_seconds"],
        "task_seconds_per_trial": round(summary["task_seconds"] / max(1, n_trials_done), 3),
        "cpus": summary["cpus"],
        "best_score": (best.get("values") or {}).get("score"),
        "best_params": best.get("params"),
        "pbo": (summary.get("pbo") or {}).get("pbo"),
        "dsr": (summary.get("dsr") or {}).get("dsr"),
        "run_dir": str(out) if args.keep else None,
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4, help="trials in flight (sweep.concurrency)")
    parser.add_argument("--pruner", default="median", choices=["median", "successive_halving", "none"])
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the embedded Ray cluster (ray.num_cpus)")
    parser.add_argument(
        "--no-truncated-fold",
        dest="truncated_fold",
        action="store_false",
        help="no truncated final fold (15 folds instead of 16)",
    )
    parser.add_argument("--store", default=str(REPO / "bench/.store-walkforward"), help="store folder")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (its path is printed)")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.symbols < 1 or args.concurrency < 1 or args.cpus < 1:
        parser.error("--trials, --symbols, --concurrency and --cpus must be >= 1")

    built = build_store(args.store, args.symbols)
    load_start = os.getloadavg()[0]
    figures = run_sweep_subprocess(args, built["symbols"])
    slope, overhead = figures["driver_rss_slope_mb_per_100_trials"], figures["scheduling_overhead"]
    report = {
        "trials": args.trials,
        "symbols": args.symbols,
        "interval": "1d",
        "concurrency": args.concurrency,
        "pruner": args.pruner,
        "sampler": "tpe",
        "store_build_s": built["store_build_s"],
        "bars_written": built["bars_written"],
        **figures,
        "targets_met": {
            "driver_rss_flat": slope is not None and slope <= 5.0,
            "scheduling_overhead_under_10pct": overhead is not None and overhead < 0.10,
        },
        "load_avg": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
