"""The `trader` command.

Every subcommand loads one validated Settings object from ``--config`` files, an optional risk ``--profile``
overlay, the environment and ``--set key.path=value`` overrides, then calls into trader/ (and later cluster/).
Errors the project raises on purpose (:class:`trader.errors.TraderError`) are printed as one line on stderr
with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from jobs.options import settings_options
from trader.errors import TraderError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="trader")
def cli() -> None:
    """Algorithmic-trading research and paper trading on a Ray cluster."""


@cli.group()
def config() -> None:
    """Inspect settings."""


@config.command("show")
@settings_options
def config_show(settings: Any) -> None:
    """Print the merged, validated settings as YAML, secrets masked."""
    from trader.config import render_settings

    click.echo(render_settings(settings), nl=False)


def _register() -> None:
    from jobs.backtest import backtest
    from jobs.data import data
    from jobs.ibkr import ibkr
    from jobs.ibsim import ibsim
    from jobs.paper import paper
    from jobs.report import report
    from jobs.submit import submit
    from jobs.sweep import sweep

    cli.add_command(data)
    cli.add_command(ibsim)
    cli.add_command(ibkr)
    cli.add_command(paper)
    cli.add_command(backtest)
    cli.add_command(report)
    cli.add_command(submit)
    cli.add_command(sweep)


_register()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 2 a TraderError or usage error, 130 interrupted)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="trader", standalone_mode=False)
    except TraderError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
