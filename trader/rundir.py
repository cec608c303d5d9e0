"""A run's output folder: a local path or an ``s3://bucket/prefix`` URI, written file by file, atomically.

Every file appears whole or not at all: locally it is written to a hidden temporary sibling, flushed and
renamed; on S3 it is encoded in memory and sent as one PUT, which S3 shows only once complete. Credentials and
endpoints come from the environment (or instance role) only; a :class:`RunDir` pickles as its URI.

>>> import tempfile, polars as pl
>>> run = RunDir(tempfile.mkdtemp())
>>> run.write_json("summary.json", {"sharpe": 1.2})
>>> run.read_json("summary.json")
{'sharpe': 1.2}
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs

from trader.data.objectstore import Location, parse_location, s3_client, s3_error, temp_path
from trader.errors import DataError, StoreError

__all__ = ["RunDir", "json_safe"]


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None and numpy scalars as Python numbers (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()  # numpy scalars and arrays alike
        if isinstance(value, list):
            return json_safe(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunDir:
    """The folder of one run; paths given to its methods are relative POSIX paths under it."""

    def __init__(self, uri: str) -> None:
        self._loc: Location = parse_location(uri)
        self.uri = self._loc.uri
        self._fs: pafs.FileSystem | None = None
        self._s3: Any = None

    def __reduce__(self) -> tuple[type[RunDir], tuple[str]]:
        return (RunDir, (self.uri,))

    def __repr__(self) -> str:
        return f"RunDir({self.uri!r})"

    @property
    def is_s3(self) -> bool:
        return self._loc.is_s3

    @property
    def filesystem(self) -> pafs.FileSystem:
        if self._fs is None:
            self._fs = pafs.FileSystem.from_uri(self.uri)[0] if self._loc.is_s3 else pafs.LocalFileSystem()
        return self._fs

    def path(self, relative: str) -> str:
        """Where ``relative`` lives, in the form the filesystem (and ``pl.read_parquet``) takes."""
        return self._loc.join(relative) if not self._loc.is_s3 else f"s3://{self._loc.join(relative)}"

    # -- writing -----------------------------------------------------------------------------------------
    def write_bytes(self, relative: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        """Write one file atomically (see the module docstring)."""
        if self._loc.is_s3:
            from botocore.exceptions import BotoCoreError, ClientError

            if self._s3 is None:
                self._s3 = s3_client()
            key = self._loc.key(relative)
            try:
                self._s3.put_object(Bucket=self._loc.bucket, Key=key, Body=body, ContentType=content_type)
            except (BotoCoreError, ClientError) as exc:
                raise s3_error(exc, "write", f"s3://{self._loc.bucket}/{key}") from exc
            return

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                fh.write(body)

        self._replace_local(relative, write)

    def _replace_local(self, relative: str, write: Callable[[str], None]) -> None:
        """``write(tmp)`` a hidden sibling, flush it to disk, rename it onto the final name."""
        final = self._loc.join(relative)
        tmp = temp_path(final)
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            write(tmp)
            # Flushed before the rename, so a crash cannot leave an empty file under the final name.
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            raise StoreError(f"write {final} failed: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):  # already renamed, or never created
                os.remove(tmp)

    def write_parquet(self, relative: str, frame: pl.DataFrame) -> None:
        """One Parquet file (zstd), atomically."""
        sink = io.BytesIO()
        frame.write_parquet(sink, compression="zstd")
        self.write_bytes(relative, sink.getvalue(), "application/vnd.apache.parquet")

    def write_json(self, relative: str, data: Any) -> None:
        """One JSON file (non-finite numbers as null), atomically."""
        text = json.dumps(json_safe(data), indent=2, sort_keys=True, default=str) + "\n"
        self.write_bytes(relative, text.encode(), "application/json")

    def sink_parquet(self, relative: str, frame: pl.LazyFrame) -> None:
        """Stream a lazy frame into one Parquet file (zstd) without holding it in memory, atomically."""
        if self._loc.is_s3:
            from botocore.exceptions import BotoCoreError, ClientError

            if self._s3 is None:
                self._s3 = s3_client()
            key = self._loc.key(relative)
            with tempfile.TemporaryDirectory(prefix="trader-sink-") as tmp:
                local = os.path.join(tmp, "part.parquet")
                frame.sink_parquet(local, compression="zstd")
                try:
                    # Multipart from disk; the object appears only when the upload completes.
                    self._s3.upload_file(
                        local,
                        self._loc.bucket,
                        key,
                        ExtraArgs={"ContentType": "application/vnd.apache.parquet"},
                    )
                except (BotoCoreError, ClientError) as exc:
                    raise s3_error(exc, "write", f"s3://{self._loc.bucket}/{key}") from exc
            return
        self._replace_local(relative, lambda tmp: frame.sink_parquet(tmp, compression="zstd"))

    def scan_parquet(self, relatives: list[str]) -> pl.LazyFrame:
        """A lazy scan over several Parquet files of this run, in the order given (S3 through the env)."""
        return pl.scan_parquet([self.path(r) for r in relatives])

    # -- reading -----------------------------------------------------------------------------------------
    def read_bytes(self, relative: str) -> bytes:
        where = self.path(relative)
        try:
            with self.filesystem.open_input_stream(self._loc.join(relative)) as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise DataError(f"{where}: no such file in run {self.uri}") from exc
        except (OSError, pa.ArrowException) as exc:
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                raise DataError(f"{where}: no such file in run {self.uri}") from exc
            raise StoreError(f"read {where} failed: {exc}") from exc

    def read_parquet(self, relative: str) -> pl.DataFrame:
        body = self.read_bytes(relative)
        try:
            return pl.read_parquet(io.BytesIO(body))
        except Exception as exc:  # polars raises several types for a corrupt file
            raise DataError(f"{self.path(relative)}: not a readable Parquet file ({exc})") from exc

    def read_json(self, relative: str) -> Any:
        body = self.read_bytes(relative)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise DataError(f"{self.path(relative)}: not valid JSON ({exc})") from exc

    def exists(self, relative: str) -> bool:
        info = self.filesystem.get_file_info(self._loc.join(relative))
        return info.type == pafs.FileType.File

    def list(self, relative: str = "") -> list[str]:
        """Relative paths of every file under ``relative`` (recursive, sorted; temporary files skipped)."""
        base = self._loc.join(relative) if relative else self._loc.path
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        root = self._loc.path.rstrip("/") + "/"
        out = []
        for info in self.filesystem.get_file_info(selector):
            if info.type != pafs.FileType.File or os.path.basename(info.path).startswith("."):
                continue
            out.append(info.path[len(root) :] if info.path.startswith(root) else info.path)
        return sorted(out)
