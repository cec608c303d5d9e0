"""`trader report RUN_DIR`: rebuild the self-contained ``report.html`` of a walk-forward run directory.

Runs as ``python -m jobs.report RUN_DIR`` too, so ``ray job submit`` can call it.
"""

from __future__ import annotations

import sys

import click


@click.command("report")
@click.argument("run_dir")
@click.option(
    "--open", "open_browser", is_flag=True, help="Open the written report in a web browser (local)."
)
def report(run_dir: str, open_browser: bool) -> None:
    """Rebuild RUN_DIR/report.html (RUN_DIR: a local folder or s3://bucket/prefix) and print its path.

    The page works offline: equity vs benchmark, drawdown, OOS Sharpe per fold, per-symbol metrics,
    parameter stability, regime and bandit arm shares, risk events. S3 credentials and endpoint come from
    the environment (AWS_* variables or the instance role).
    """
    from trader.report import build_report

    path = build_report(run_dir)
    click.echo(path)
    if open_browser:
        if path.startswith("s3://"):
            click.echo("--open: the report is on S3; download it first, e.g. aws s3 cp URI .", err=True)
            return
        import pathlib
        import webbrowser

        if not webbrowser.open(pathlib.Path(path).as_uri()):
            click.echo("--open: no web browser found; open the path above yourself", err=True)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["report", *sys.argv[1:]]))
