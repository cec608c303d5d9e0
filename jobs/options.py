"""Options shared by every command: where settings come from."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import click


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--config``, ``--profile`` and ``--set`` to a command."""

    @click.option(
        "--config",
        "configs",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="YAML settings file; repeat to layer several (later files win).",
    )
    @click.option("--profile", default=None, help="Risk profile overlay: low, balanced or strict.")
    @click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one setting, e.g. --set risk.max_drawdown=0.2 (wins over files and environment).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, configs: Sequence[str], profile: str | None, overrides: Sequence[str], **kw: Any):
        from trader.config import load_settings

        settings = load_settings(list(configs), list(overrides), profile=profile)
        logging.getLogger().setLevel(settings.log_level)
        return func(*args, settings=settings, **kw)

    return wrapper
