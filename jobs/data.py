"""`trader data ...`: list, ingest, synthesise and copy bar stores.

Runs as ``python -m jobs.data`` too, so ``ray job submit`` can call it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from tqdm import tqdm

from jobs.options import settings_options


@click.group()
def data() -> None:
    """Bar stores: list, ingest CSV files, generate synthetic bars, copy between folders and S3."""


@data.command("ls")
@click.option(
    "--store", default=None, help="Store URI (local path or s3://bucket/prefix); default data.store."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@settings_options
def data_ls(settings: Any, store: str | None, as_json: bool) -> None:
    """List symbols, intervals, first/last bar and row counts in a store."""
    from trader.data.store import BarStore

    uri = store or settings.data.store
    listing = BarStore(uri).list_bars()
    if as_json:
        for row in listing.iter_rows(named=True):
            click.echo(json.dumps(row, default=str))
        return
    if listing.is_empty():
        click.echo(f"{uri}: no bars")
        return
    click.echo(f"{uri}: {listing.height} series, {int(listing['rows'].sum()):,} bars")
    header = f"{'symbol':<10} {'interval':<8} {'first bar (UTC)':<20} {'last bar (UTC)':<20} {'bars':>12}"
    click.echo(header)
    for row in listing.iter_rows(named=True):
        click.echo(
            f"{row['symbol']:<10} {row['interval']:<8} {row['first_ts']:%Y-%m-%d %H:%M}     "
            f"{row['last_ts']:%Y-%m-%d %H:%M}     {row['rows']:>12,}"
        )


@data.command("synth")
@click.option("--store", default=None, help="Store URI (default: data.store).")
@click.option(
    "--symbols", "symbols_opt", default=None, help="A count (20) or a list (AAA,BBB); default synth.*."
)
@click.option("--start", default=None, help="First date, YYYY-MM-DD (default: synth.start).")
@click.option("--end", default=None, help="Last date, YYYY-MM-DD, inclusive (default: synth.end).")
@click.option(
    "--interval", "intervals", multiple=True, help="1d or 1m; repeat for both (default: synth.intervals)."
)
@click.option("--seed", type=int, default=None, help="Generator seed (default: synth.seed).")
@settings_options
def data_synth(
    settings: Any,
    store: str | None,
    symbols_opt: str | None,
    start: str | None,
    end: str | None,
    intervals: tuple[str, ...],
    seed: int | None,
) -> None:
    """Generate deterministic synthetic bars over real exchange sessions into a store.

    Same seed, same bars, same bytes. The demo dataset (configs/demo.yaml) is 20 symbols x 5 years, 1d and 1m.
    """
    from trader.calendar import get_calendar
    from trader.data.objectstore import preflight
    from trader.data.store import BarStore
    from trader.data.synth import synth_bars, synth_symbol_names

    spec = settings.synth
    uri = store or settings.data.store
    if symbols_opt is None:
        symbols = list(spec.symbols) if spec.symbols is not None else synth_symbol_names(spec.symbol_count)
    elif symbols_opt.strip().isdigit():
        symbols = synth_symbol_names(int(symbols_opt))
    else:
        symbols = [s.strip() for s in symbols_opt.split(",") if s.strip()]
    chosen = list(intervals) or list(spec.intervals)
    seed = spec.seed if seed is None else seed
    first, last = start or spec.start, end or spec.end
    calendar = get_calendar(settings.data.exchange)
    preflight(uri)
    bars_store = BarStore(uri)
    total = 0
    with tqdm(total=len(symbols) * len(chosen), desc="synth", unit="series", disable=None) as bar:
        for interval in chosen:
            for symbol in symbols:
                frame = synth_bars(symbol, interval, first, last, seed=seed, calendar=calendar)
                bars_store.write_bars(symbol, interval, frame)
                total += frame.height
                bar.set_postfix_str(f"{symbol} {interval}", refresh=False)
                bar.update()
    click.echo(f"wrote {total:,} synthetic bars ({len(symbols)} symbols x {', '.join(chosen)}) to {uri}")


@data.command("ingest")
@click.option("--store", default=None, help="Store URI (default: data.store).")
@click.option("--symbol", required=True, help="Symbol the bars belong to, e.g. SPY.")
@click.option("--interval", default=None, help="Bar interval: 1m, 5m, 1h or 1d (default: data.interval).")
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    help="Files, a glob or a folder; .gz and .zip read directly.",
)
@click.option(
    "--format",
    "fmt",
    default="auto",
    show_default=True,
    help="auto, yahoo, quandl, google, ninjatrader, generic.",
)
@click.option(
    "--sanity", "mode", default=None, help="enforce, warn, repair or off (default: data.sanity.mode)."
)
@click.option("--sanity-profile", default=None, help="strict or relaxed (default: data.sanity.profile).")
@click.option(
    "--source-tz", default=None, help="IANA zone of naive intraday timestamps, e.g. America/New_York."
)
@click.option("--adjust", type=click.Choice(["raw", "split"]), default="raw", show_default=True)
@click.option(
    "--bar-label", type=click.Choice(["start", "end"]), default=None, help="What source timestamps mark."
)
@click.option("--hours", type=click.Choice(["regular", "extended"]), default="regular", show_default=True)
@click.option(
    "--column", "columns", multiple=True, metavar="OURS=THEIRS", help="Column mapping, e.g. ts=Day."
)
@settings_options
def data_ingest(
    settings: Any,
    store: str | None,
    symbol: str,
    interval: str | None,
    sources: tuple[str, ...],
    fmt: str,
    mode: str | None,
    sanity_profile: str | None,
    source_tz: str | None,
    adjust: str,
    bar_label: str | None,
    hours: str,
    columns: tuple[str, ...],
) -> None:
    """Parse vendor CSV files, validate the bars and write them to the store.

    Re-ingesting an overlapping range replaces it. In enforce mode a symbol whose bars fail validation is not
    written at all, and the command exits non-zero naming the failed checks.
    """
    from trader.calendar import get_calendar
    from trader.data.ingest import expand_sources, ingest_into_store, read_source
    from trader.data.objectstore import preflight
    from trader.data.store import BarStore
    from trader.errors import ConfigError

    column_map: dict[str, str] = {}
    for item in columns:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours or not theirs:
            raise ConfigError(f"--column {item!r}: use OURS=THEIRS, e.g. --column ts=Date")
        column_map[ours.strip()] = theirs.strip()
    uri = store or settings.data.store
    interval = interval or settings.data.interval
    files = expand_sources(list(sources))
    raw = read_source(
        files,
        fmt=fmt,
        interval=interval,
        source_tz=source_tz,
        adjust=adjust,  # type: ignore[arg-type]
        bar_label=bar_label,  # type: ignore[arg-type]
        column_map=column_map or None,
        symbol=symbol,
    )
    preflight(uri)
    result = ingest_into_store(
        BarStore(uri),
        symbol,
        interval,
        raw,
        mode=mode or settings.data.sanity.mode,
        profile=sanity_profile or settings.data.sanity.profile,
        calendar=get_calendar(settings.data.exchange),
        max_na_fraction=settings.engine.max_na_fraction,
        hours=hours,  # type: ignore[arg-type]
    )
    for note in raw.notes:
        click.echo(f"note: {note}", err=True)
    if result.report.findings:
        click.echo(result.report.format(), err=True)
    written = result.stats.rows_written if result.stats else 0
    replaced = result.stats.rows_replaced if result.stats else 0
    click.echo(
        f"{symbol} {interval}: {written:,} bars written ({replaced:,} replaced) "
        f"from {len(files)} file(s) to {uri}"
    )


@data.command("sync")
@click.argument("src")
@click.argument("dst")
def data_sync(src: str, dst: str) -> None:
    """Copy a store between a local folder and S3 (either way); matching shards are skipped, copies resume."""
    from trader.data.objectstore import preflight, sync

    preflight(dst)
    with tqdm(desc="sync", unit="file", disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        stats = sync(src, dst, progress=progress)
    click.echo(
        f"{stats.files_copied} file(s) copied ({stats.bytes_copied:,} bytes), "
        f"{stats.files_skipped} already in place"
    )


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["data", *sys.argv[1:]]))
