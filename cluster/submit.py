"""Submitting ``python -m jobs.<name> ARGS...`` to a running Ray cluster through Ray's job submission API.

The job runs on the cluster's head node (as its driver) with this checkout as its ``working_dir``, so the
code a job runs is the code you have, without reinstalling the cluster. Its logs stream back to the caller
and its final status decides the outcome: SUCCEEDED, FAILED or STOPPED.

What travels with the job (``runtime_env``):

- ``working_dir``: the project folder, minus :data:`WORKING_DIR_EXCLUDES` (virtual environments, bar
  stores, run folders, git metadata, caches); Ray also honours the folder's ``.gitignore``.
- ``env_vars``: ``RAY_AUTH_MODE`` from ``ray.auth_mode``, and the project's settings environment found in
  the caller's environment (``TRADER_*`` and the names in :data:`trader.config.ENV_ALIASES`, e.g.
  ``TRADER_DATA__STORE=s3://bucket/bars``), minus secrets and ``TRADER_RAY__ADDRESS``; then
  ``ray.runtime_env`` from settings on top. ``AWS_*`` variables are never copied: the driver and workers
  reach S3 through their instance role (see ray-cluster.yaml) or their own environment, so credentials
  never travel in a runtime env (which every worker receives and the dashboard shows).

Address: ``ray.address`` from settings, else ``RAY_ADDRESS``; the dashboard's HTTP address, e.g.
``http://127.0.0.1:8265`` (``ray dashboard ray-cluster.yaml`` forwards a launched cluster's dashboard there).
Ray itself would let ``RAY_ADDRESS`` override an explicit address; here the settings win, as everywhere.

Example::

    from trader.config import load_settings
    from cluster.submit import submit_job, follow_job
    settings = load_settings([], ["ray.address=http://127.0.0.1:8265"])
    handle = submit_job("backtest", ["--no-walkforward", "--symbols", "SPY"], settings.ray)
    outcome = follow_job(handle)          # streams the job's logs to stdout
    print(outcome.status, outcome.exit_code)
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import logging
import os
import re
import shlex
import sys
import time
import typing
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, SecretStr

from trader.config import ENV_ALIASES, ENV_PREFIX, RaySettings, Settings
from trader.errors import ClusterError, JobFailedError, JobStoppedError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

__all__ = [
    "EXIT_CODES",
    "WORKING_DIR_EXCLUDES",
    "ClusterError",
    "JobFailedError",
    "JobHandle",
    "JobOutcome",
    "JobStoppedError",
    "connect",
    "follow_job",
    "forwarded_env",
    "job_entrypoint",
    "job_runtime_env",
    "project_root",
    "resolve_address",
    "stop_job",
    "submit_job",
]

logger = logging.getLogger(__name__)

# Gitignore-style patterns relative to the working_dir. Anchored ("/data") where only the top-level folder
# is meant: a bare "data" would also drop the trader/data package.
WORKING_DIR_EXCLUDES: Final[tuple[str, ...]] = (
    "/.venv",
    "/data",
    "/runs",
    "/.git",
    "/.numba_cache",
    "/.pytest_cache",
    "/.ruff_cache",
    "/.hypothesis",
    "/bench/.venv-vbt",
    "/build",
    "/dist",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
)

# Job status -> exit status of `trader submit`. 130 is the shell's "interrupted" (128 + SIGINT).
EXIT_CODES: Final[Mapping[str, int]] = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 130}

# Never forwarded even without a secret-looking name: inside a job the driver joins the cluster it runs on
# (Ray sets RAY_ADDRESS for it); the submitter's dashboard URL would point it elsewhere.
_NOT_FORWARDED: Final = frozenset({ENV_PREFIX + "RAY__ADDRESS"})
# The same rule RaySettings applies to runtime_env: runtime envs reach every worker and show in the dashboard.
_SECRET_NAME: Final = re.compile(r"SECRET|PASSWORD|TOKEN|CREDENTIAL|ACCESS_KEY", re.IGNORECASE)
_ADDRESS_ENV: Final = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")
_HOW_TO_ADDRESS: Final = (
    "set ray.address (e.g. --set ray.address=http://127.0.0.1:8265) or RAY_ADDRESS to the dashboard address"
)


@dataclass(frozen=True)
class JobHandle:
    """A submitted job: the client that submitted it, its submission id and the dashboard address."""

    client: JobSubmissionClient
    submission_id: str
    address: str


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended. ``exit_code`` is :data:`EXIT_CODES` of ``status``; ``interrupted`` marks Ctrl-C."""

    submission_id: str
    status: str
    message: str
    driver_exit_code: int | None
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    def raise_for_status(self) -> None:
        """Raise :class:`JobFailedError` / :class:`JobStoppedError` unless the job SUCCEEDED."""
        if self.status == "SUCCEEDED":
            return
        # Ray's message for a failed job carries the last logs over many lines; the first line says it.
        first = self.message.strip().splitlines()[0] if self.message.strip() else ""
        detail = f": {first}" if first else ""
        if self.status == "STOPPED":
            why = " after Ctrl-C" if self.interrupted else ""
            raise JobStoppedError(f"job {self.submission_id} was stopped{why}{detail}")
        if self.interrupted and self.status not in EXIT_CODES:
            # Ray delivers a stop to the job's supervisor, which a PENDING job may not have yet.
            raise JobStoppedError(
                f"job {self.submission_id} is still {self.status} after Ctrl-C asked Ray to stop it; "
                f"Ray stops it once it starts (check: ray job status {self.submission_id})"
            )
        raise JobFailedError(f"job {self.submission_id} {self.status}{detail}")


# -- pure parts -------------------------------------------------------------------------------------------


def resolve_address(configured: str | None, env: Mapping[str, str] | None = None) -> str:
    """The dashboard address to submit to: ``configured`` (``ray.dashboard_address``, else ``ray.address``),
    else ``RAY_ADDRESS``.

    Raises ClusterError when neither is set, or when the address is ``local`` (that starts an embedded
    cluster; a job needs a running one).

    >>> resolve_address(None, {"RAY_ADDRESS": "http://127.0.0.1:8265"})
    'http://127.0.0.1:8265'
    """
    env = os.environ if env is None else env
    address = (configured or env.get("RAY_ADDRESS") or "").strip()
    if not address:
        raise ClusterError(f"no Ray cluster address configured; {_HOW_TO_ADDRESS}")
    if address == "local":
        raise ClusterError(
            "ray.address is 'local' (an embedded cluster); submitting needs a running cluster: "
            + _HOW_TO_ADDRESS
        )
    return address.rstrip("/")


def job_entrypoint(job: str, args: Sequence[str] = ()) -> str:
    """The shell command Ray runs for ``job``: ``python -m jobs.<job> ARGS...``, each argument quoted.

    >>> job_entrypoint("backtest", ["--symbols", "SPY,QQQ", "--param", "fast=10"])
    'python -m jobs.backtest --symbols SPY,QQQ --param fast=10'
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", job):
        raise ClusterError(f"job name {job!r} is not a module name under jobs/ (e.g. backtest)")
    return shlex.join(["python", "-m", f"jobs.{job}", *args])


def _secret_settings_env() -> frozenset[str]:
    """``TRADER_*`` names of every SecretStr setting (e.g. TRADER_SWEEP__STORAGE_URL)."""
    names: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            env_name = f"{prefix}__{name.upper()}" if prefix else ENV_PREFIX + name.upper()
            for tp in (field.annotation, *typing.get_args(field.annotation)):
                if tp is SecretStr:
                    names.add(env_name)
                elif isinstance(tp, type) and issubclass(tp, BaseModel):
                    walk(tp, env_name)

    walk(Settings, "")
    return frozenset(names)


def forwarded_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's settings environment that a job should see: ``TRADER_*`` and the ENV_ALIASES names.

    Left out: secrets (SecretStr settings and names like ``*TOKEN*``, ``*SECRET*``), ``TRADER_RAY__ADDRESS``
    and everything else, ``AWS_*`` included: workers use their instance role or their own environment.

    >>> forwarded_env({"TRADER_DATA__STORE": "s3://b/bars", "AWS_SECRET_ACCESS_KEY": "x", "HOME": "/root"})
    {'TRADER_DATA__STORE': 's3://b/bars'}
    """
    env = os.environ if env is None else env
    secrets = _secret_settings_env()
    out: dict[str, str] = {}
    for name in sorted(env):
        if not (name.startswith(ENV_PREFIX) or name in ENV_ALIASES):
            continue
        if name in _NOT_FORWARDED or name in secrets or _SECRET_NAME.search(name):
            continue
        out[name] = env[name]
    return out


def project_root() -> Path:
    """The checkout this package runs from (the folder holding pyproject.toml, trader/, cluster/, jobs/).

    Raises ClusterError when this package is installed outside a checkout (e.g. into site-packages).
    """
    root = Path(__file__).resolve().parents[1]
    if all((root / part).exists() for part in ("pyproject.toml", "trader", "cluster", "jobs")):
        return root
    raise ClusterError(
        f"cannot find the project checkout to upload (looked at {root}); give the working_dir explicitly"
    )


def job_runtime_env(
    ray: RaySettings, working_dir: str | Path, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``runtime_env`` of a submitted job (see the module docstring for what goes in and why).

    ``ray.runtime_env`` from settings is applied on top: its ``env_vars`` override forwarded ones, its
    ``excludes`` add to :data:`WORKING_DIR_EXCLUDES`, its ``working_dir`` (e.g. a package URI) replaces
    ``working_dir``. ``RAY_AUTH_MODE`` is always ``ray.auth_mode``.

    >>> job_runtime_env(RaySettings(), "/src/trader", {})["env_vars"]
    {'RAY_AUTH_MODE': 'disabled'}
    """
    user = copy.deepcopy(dict(ray.runtime_env))
    env_vars = {**forwarded_env(env), **{k: str(v) for k, v in (user.pop("env_vars", None) or {}).items()}}
    env_vars["RAY_AUTH_MODE"] = ray.auth_mode
    excludes = [*WORKING_DIR_EXCLUDES, *(user.pop("excludes", None) or [])]
    runtime_env: dict[str, Any] = {"working_dir": str(working_dir), **user}
    runtime_env["excludes"] = excludes
    runtime_env["env_vars"] = env_vars
    return runtime_env


# -- talking to the cluster -------------------------------------------------------------------------------


@contextlib.contextmanager
def _environ(set_: Mapping[str, str], unset: Sequence[str]) -> Iterator[None]:
    """Temporarily set and unset variables of this process's environment."""
    saved = {name: os.environ.get(name) for name in (*set_, *unset)}
    try:
        os.environ.update(set_)
        for name in unset:
            os.environ.pop(name, None)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _use_auth_mode(mode: str) -> None:
    """Make this process talk to the cluster with ``mode`` (Ray reads RAY_AUTH_MODE into a cached config)."""
    os.environ["RAY_AUTH_MODE"] = mode
    if "ray._raylet" not in sys.modules:
        return  # read on first import
    from ray._raylet import AuthenticationMode, Config, get_authentication_mode

    wanted = AuthenticationMode.TOKEN if mode == "token" else AuthenticationMode.DISABLED
    if get_authentication_mode() != wanted:
        Config.initialize("")  # what Ray itself does after changing RAY_AUTH_MODE


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_dashboard(address: str, timeout_s: float) -> None:
    """Fail fast, in one line, when nothing answers HTTP at ``address`` (any HTTP status counts as up)."""
    if not address.startswith(("http://", "https://")):
        return  # a GCS or ray:// address: Ray looks the dashboard up itself
    try:
        with urllib.request.urlopen(f"{address}/api/version", timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        return  # it answered (e.g. 401 without a token): the client reports what is wrong
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClusterError(
            f"cannot reach the Ray dashboard at {address} ({reason}); is the cluster up and the dashboard "
            f"port forwarded (ray dashboard ray-cluster.yaml)? Otherwise fix ray.address / RAY_ADDRESS"
        ) from None


def connect(address: str, auth_mode: str = "disabled", *, timeout_s: float = 10.0) -> JobSubmissionClient:
    """A JobSubmissionClient for the dashboard at ``address``, after checking that it answers.

    ``auth_mode`` (``ray.auth_mode``) is set as this process's ``RAY_AUTH_MODE``; with ``token`` the client
    sends the token from ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``.
    Raises ClusterError (one line) when the dashboard does not answer or refuses us.

    >>> client = connect("http://127.0.0.1:8265")  # doctest: +SKIP
    """
    _use_auth_mode(auth_mode)
    _check_dashboard(address, timeout_s)
    from ray.job_submission import JobSubmissionClient

    # Ray's packaging logs one INFO line per .gitignore it honours; the upload line itself stays.
    logging.getLogger("ray._private.runtime_env.packaging").setLevel(logging.WARNING)

    # Ray lets RAY_ADDRESS / RAY_API_SERVER_ADDRESS override the address it is given; ours is resolved.
    with _environ({}, _ADDRESS_ENV):
        try:
            return JobSubmissionClient(address)
        except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
            raise ClusterError(f"cannot use the Ray cluster at {address}: {_first_line(exc)}") from None


def submit_job(
    job: str,
    args: Sequence[str],
    ray: RaySettings,
    *,
    working_dir: str | Path | None = None,
    entrypoint_num_cpus: float = 0.0,
    env: Mapping[str, str] | None = None,
    client: JobSubmissionClient | None = None,
) -> JobHandle:
    """Submit ``python -m jobs.<job> ARGS...`` to the cluster at ``ray.address`` (else ``RAY_ADDRESS``).

    ``working_dir`` defaults to :func:`project_root`. ``entrypoint_num_cpus`` CPUs are reserved for the
    driver: 0 runs it on the head node (which advertises no CPUs), 1 or more makes it wait for a worker.
    ``env`` is the environment settings variables are forwarded from (default ``os.environ``).
    Returns a :class:`JobHandle`; raises ClusterError (one line) when the cluster refuses the job.

    >>> args = ["--no-walkforward", "--symbols", "SPY"]
    >>> handle = submit_job("backtest", args, RaySettings(address="http://127.0.0.1:8265"))  # doctest: +SKIP
    """
    address = resolve_address(ray.dashboard_address or ray.address, env)
    if client is None:
        client = connect(address, ray.auth_mode)
    runtime_env = job_runtime_env(ray, working_dir or project_root(), env)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    submission_id = f"trader-{job.replace('_', '-')}-{stamp}-{uuid.uuid4().hex[:6]}"
    try:
        client.submit_job(
            entrypoint=job_entrypoint(job, args),
            submission_id=submission_id,
            runtime_env=runtime_env,
            entrypoint_num_cpus=entrypoint_num_cpus or None,
            metadata={"trader_job": job},
        )
    except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
        raise ClusterError(f"the Ray cluster at {address} refused job {job!r}: {_first_line(exc)}") from None
    except KeyboardInterrupt:
        # Ctrl-C mid-request: the cluster may have accepted the job; we know its id, so stop it.
        with contextlib.suppress(Exception):
            client.stop_job(submission_id)
        raise
    return JobHandle(client=client, submission_id=submission_id, address=address)


def _status(client: JobSubmissionClient, submission_id: str) -> str:
    return str(client.get_job_status(submission_id))


def _wait_terminal(client: JobSubmissionClient, submission_id: str, timeout_s: float, poll_s: float) -> str:
    """Poll until the job's status is terminal or ``timeout_s`` passes; return the last status seen."""
    deadline = time.monotonic() + timeout_s
    status = _status(client, submission_id)
    while status not in EXIT_CODES and time.monotonic() < deadline:
        time.sleep(poll_s)
        status = _status(client, submission_id)
    return status


def stop_job(handle: JobHandle, *, timeout_s: float = 30.0, poll_s: float = 0.25) -> str:
    """Ask Ray to stop the job and wait (up to ``timeout_s`` seconds) until it has; return its status."""
    with contextlib.suppress(RuntimeError):  # already finished: nothing to stop
        handle.client.stop_job(handle.submission_id)
    return _wait_terminal(handle.client, handle.submission_id, timeout_s, poll_s)


async def _tail(handle: JobHandle, write: Callable[[str], object]) -> None:
    async for chunk in handle.client.tail_job_logs(handle.submission_id):
        write(chunk)


def _write_stdout(chunk: str) -> None:
    sys.stdout.write(chunk)
    sys.stdout.flush()


def follow_job(
    handle: JobHandle,
    write: Callable[[str], object] = _write_stdout,
    *,
    announce: Callable[[JobHandle], object] | None = None,
    poll_s: float = 0.5,
    stop_timeout_s: float = 30.0,
    pending_stop_timeout_s: float = 5.0,
) -> JobOutcome:
    """Stream the job's logs to ``write`` until it ends; return its :class:`JobOutcome`.

    ``announce`` is called first (e.g. to print the job id), inside the Ctrl-C handling. Ctrl-C
    (KeyboardInterrupt) while following stops the job on the cluster, waits for it to be STOPPED and
    returns with ``interrupted=True`` (waiting up to ``stop_timeout_s`` seconds, ``pending_stop_timeout_s``
    for a job still PENDING); a second Ctrl-C abandons the wait. If the log stream breaks, the job's
    status is polled every ``poll_s`` seconds instead.

    >>> follow_job(handle).exit_code  # doctest: +SKIP
    0
    """
    client, submission_id = handle.client, handle.submission_id
    try:
        if announce is not None:
            announce(handle)
        try:
            asyncio.run(_tail(handle, write))
        except (RuntimeError, OSError) as exc:
            logger.warning("log stream of job %s broke (%s); polling its status", submission_id, exc)
        # The stream ends when the job does; the status may trail it by a moment.
        status = _wait_terminal(client, submission_id, float("inf"), poll_s)
        interrupted = False
    except KeyboardInterrupt:
        logger.warning("stopping job %s", submission_id)
        # A PENDING job may have no supervisor to receive the stop yet (e.g. waiting for a worker to boot):
        # do not hold the terminal long for it.
        pending = _status(client, submission_id) == "PENDING"
        status = stop_job(
            handle, timeout_s=min(stop_timeout_s, pending_stop_timeout_s) if pending else stop_timeout_s
        )
        interrupted = True
    info = client.get_job_info(submission_id)
    return JobOutcome(
        submission_id=submission_id,
        status=status,
        message=info.message or "",
        driver_exit_code=info.driver_exit_code,
        interrupted=interrupted,
    )
