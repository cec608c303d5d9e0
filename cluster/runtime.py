"""Connecting to Ray: the embedded local cluster by default, or the cluster at ``ray.address``.

Rules this module enforces (each learned the hard way with Ray 2.60):

* ``RAY_AUTH_MODE`` is set from ``ray.auth_mode`` before Ray is touched, identically for the driver, the local
  cluster it starts and its workers (Ray turns token auth on by itself once ``~/.ray/auth_token`` exists).
* With no address (settings or ``RAY_ADDRESS``), the driver starts a private local cluster with
  ``ray.init(address="local")``; calling init with no address would join whatever cluster was last
  recorded on the machine, even a dead one.
* Worker environment variables are set through the runtime env before connecting: thread caps (one numba and
  one polars thread per task: Ray provides the parallelism), the numba cache folder (compiled kernels are
  reused across workers and runs), and the non-secret data-store variables (endpoint, region). Credentials
  are never put in the runtime env: workers get them from their own environment or instance role.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, SecretStr

from trader.errors import ConfigError

__all__ = ["RayContext", "connect", "task_settings", "worker_env"]

log = logging.getLogger(__name__)

# Non-secret variables a worker needs to reach the data store (credentials deliberately absent).
STORE_ENV_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


@dataclass(frozen=True)
class RayContext:
    """Where the driver is connected: ``address`` (GCS address), ``num_cpus`` of the cluster, and whether this
    process started it (``local``) and so shuts it down on exit."""

    address: str
    num_cpus: int
    local: bool


def worker_env(settings: Any, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables every task and actor gets (see the module docstring)."""
    environ = dict(os.environ if environ is None else environ)
    env = {
        "NUMBA_NUM_THREADS": "1",
        "POLARS_MAX_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "RAY_AUTH_MODE": settings.ray.auth_mode,
        "PYTHONUNBUFFERED": "1",
    }
    if environ.get("NUMBA_CACHE_DIR"):
        env["NUMBA_CACHE_DIR"] = os.path.abspath(environ["NUMBA_CACHE_DIR"])
    for name in STORE_ENV_VARS:
        if environ.get(name):
            env[name] = environ[name]
    configured = dict(settings.ray.runtime_env.get("env_vars", {}) or {})
    env.update({str(k): str(v) for k, v in configured.items()})
    return env


def _runtime_env(settings: Any) -> dict[str, Any]:
    runtime_env = {k: v for k, v in settings.ray.runtime_env.items() if k != "env_vars"}
    env_vars = worker_env(settings)
    job_config = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if job_config:
        # A submitted job: Ray merges the job's runtime env (its uploaded working_dir, its env vars) with
        # ours and refuses any field or variable given twice, so add only what the job does not set.
        job_env = dict(json.loads(job_config).get("runtime_env") or {})
        runtime_env = {k: v for k, v in runtime_env.items() if k not in job_env}
        env_vars = {k: v for k, v in env_vars.items() if k not in (job_env.get("env_vars") or {})}
    runtime_env["env_vars"] = env_vars
    return runtime_env


def _address(settings: Any) -> str | None:
    if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") and os.environ.get("RAY_ADDRESS"):
        # Inside a submitted Ray job: Ray points RAY_ADDRESS at the job's own cluster; use it, whatever the
        # config says (its ray.address may be the dashboard URL the job was submitted through).
        return os.environ["RAY_ADDRESS"]
    address = settings.ray.address or os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith(("http://", "https://")):
        raise ConfigError(
            f"ray address {address!r} is a dashboard (job submission) address; give the cluster's GCS "
            "address (host:6379) or 'auto' to run a driver, or `trader submit` to send the job there"
        )
    return address


@contextlib.contextmanager
def connect(settings: Any) -> Iterator[RayContext]:
    """Connect to Ray for the duration of a ``with`` block (see the module docstring).

    Joins an already initialised Ray (tests, notebooks) as is, and leaves it running on exit; otherwise
    connects to ``ray.address`` / ``RAY_ADDRESS``, or starts the embedded local cluster with
    ``ray.num_cpus`` CPUs (all when null) and shuts it down on exit.

    >>> from trader.config import load_settings
    >>> with connect(load_settings([], env={})) as ctx:   # doctest: +SKIP
    ...     print(ctx.num_cpus)
    """
    os.environ["RAY_AUTH_MODE"] = settings.ray.auth_mode
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        yield RayContext(_gcs_address(ray), int(ray.cluster_resources().get("CPU", 0)), local=False)
        return
    address = _address(settings)
    kwargs: dict[str, Any] = {
        "namespace": settings.ray.namespace,
        "runtime_env": _runtime_env(settings),
        "logging_level": logging.WARNING,
        "log_to_driver": True,
    }
    if address is None:
        kwargs.update(address="local", num_cpus=settings.ray.num_cpus, include_dashboard=False)
    else:
        kwargs.update(address=address)
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from exc
    try:
        ctx = RayContext(_gcs_address(ray), int(ray.cluster_resources().get("CPU", 0)), local=address is None)
        log.info("connected to Ray at %s (%d CPUs, local=%s)", ctx.address, ctx.num_cpus, ctx.local)
        yield ctx
    finally:
        ray.shutdown()


def _gcs_address(ray: Any) -> str:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # older/other contexts: the address is informational only
        return "unknown"


def task_settings(settings: Any) -> Any:
    """``settings`` with every secret field emptied, safe to ship to workers as a task argument."""

    def scrub(model: BaseModel) -> BaseModel:
        update: dict[str, Any] = {}
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, SecretStr):
                update[name] = None
            elif isinstance(value, BaseModel):
                cleaned = scrub(value)
                if cleaned is not value:
                    update[name] = cleaned
        return model.model_copy(update=update) if update else model

    return scrub(settings)
