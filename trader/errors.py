"""The typed exceptions every layer raises.

Every message is one line a user can act on: what went wrong, where (file, key, symbol, URI), and how to fix
it. The command line prints ``str(error)`` and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class TraderError(Exception):
    """Base class of every error the project raises on purpose."""

    exit_code: int = 2


class ConfigError(TraderError):
    """Settings that cannot be loaded or do not validate (missing file, bad YAML, unknown key, bad value)."""


class DataError(TraderError):
    """Bars that cannot be read, parsed or accepted."""


class SchemaError(DataError):
    """A frame or file whose columns or types do not match the bar schema."""


class IngestError(DataError):
    """A source file that cannot be parsed in the layout asked for."""


class SanityError(DataError):
    """Bars refused by validation; ``report`` holds every finding."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class StoreError(TraderError):
    """The bar store cannot be read or written (missing shards, bad URI, failed write)."""


class StorageAccessError(StoreError):
    """Object storage refused us: no credentials, no bucket, or no permission under the prefix."""


class CalendarError(TraderError):
    """An unknown exchange or a date outside the calendar's range."""


class ClusterError(TraderError):
    """No cluster address, an unreachable dashboard, or a submission the cluster refused."""


class JobFailedError(TraderError):
    """The submitted job ended FAILED (its entrypoint exited non-zero, or Ray could not start it)."""

    exit_code = 1


class JobStoppedError(TraderError):
    """The submitted job ended STOPPED (Ctrl-C while following it, or someone stopped it)."""

    exit_code = 130


class LifecycleError(TraderError):
    """A transition the session state machine does not allow, or a clock that went backwards."""
