"""`trader submit JOB ARGS...`: run ``python -m jobs.JOB ARGS...`` on a Ray cluster as a Ray job.

Options before JOB configure the submission (which cluster, settings); everything after JOB is passed to
the job unchanged. The logic lives in :mod:`cluster.submit`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import click

from jobs.options import settings_options

# Entry points that run as `python -m jobs.X`; only those present in this checkout are offered.
_JOBS = tuple(
    name for name in ("backtest", "sweep", "paper", "data") if importlib.util.find_spec(f"jobs.{name}")
)


@click.command(
    "submit",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--num-cpus",
    "entrypoint_num_cpus",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="CPUs reserved for the job's driver; 0 runs it on the head node.",
)
@click.option(
    "--working-dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Folder uploaded as the job's working_dir (default: this checkout).",
)
@click.option("--no-wait", is_flag=True, help="Print the job id and return instead of following the job.")
@click.argument("job", type=click.Choice(_JOBS))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@settings_options
def submit(
    settings: Any,
    entrypoint_num_cpus: float,
    working_dir: str | None,
    no_wait: bool,
    job: str,
    args: tuple[str, ...],
) -> None:
    """Submit JOB (e.g. backtest) with ARGS to the Ray cluster at ray.address (else RAY_ADDRESS).

    Streams the job's logs and exits with its status: 0 SUCCEEDED, 1 FAILED, 130 STOPPED (Ctrl-C stops
    the job first). Options before JOB configure the submission; ARGS go to the job unchanged (a --config
    there is read on the cluster, relative to the uploaded checkout). TRADER_* variables travel with the
    job; AWS_* variables do not: the cluster reaches S3 through its instance role.

    \b
    trader submit backtest --symbols SPY,QQQ --no-walkforward --store s3://bucket/bars
    RAY_ADDRESS=http://127.0.0.1:8265 trader submit backtest --config configs/demo.yaml --symbols SYN000
    """
    from cluster.submit import follow_job, submit_job

    handle = submit_job(
        job, args, settings.ray, working_dir=working_dir, entrypoint_num_cpus=entrypoint_num_cpus
    )
    if no_wait:
        click.echo(handle.submission_id)
        click.echo(
            f"follow: ray job logs --follow --address {handle.address} {handle.submission_id}", err=True
        )
        return

    def announce(job_handle: Any) -> None:
        click.echo(f"submitted {job_handle.submission_id} to {job_handle.address}; Ctrl-C stops it", err=True)

    outcome = follow_job(handle, announce=announce)
    outcome.raise_for_status()
    click.echo(f"job {handle.submission_id} SUCCEEDED", err=True)
