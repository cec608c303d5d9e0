"""Where a store's bytes live: location URIs, S3 access checks, and copying a store between places.

A location is a local folder (a relative or absolute path, or ``file://``) or ``s3://bucket/prefix``. S3
credentials and the endpoint come from the environment or the instance role through boto3's own chain
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, an instance
profile; ``AWS_ENDPOINT_URL`` for a non-AWS server); this module never reads them itself and never takes them
as arguments.

* :func:`preflight` checks, before a job starts, that a location can be written (credentials, bucket, write
  and delete permission under the prefix), so that a job fails in one clear line instead of hours later.
* :func:`sync` copies a store between a local folder and S3 (either way), skipping files whose size and
  sha256 already match, so an interrupted copy resumes where it stopped.

Example::

    preflight("s3://research-bars/v1")
    stats = sync("./bars", "s3://research-bars/v1", progress=lambda done, total: print(done, total))
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from trader.errors import StorageAccessError, StoreError

# Object metadata key (x-amz-meta-sha256) holding the hex sha256 of the whole object, set on every upload.
SHA256_METADATA_KEY: Final = "sha256"
# Name prefix of the probe object preflight writes and deletes; sync never copies such leftovers.
PREFLIGHT_PREFIX: Final = ".trader-preflight-"
# Files at or above this size go up and down as multipart transfers in chunks of this size (bytes). Shards
# are a few MB, so they travel as one PUT/GET; a big file gets parallel parts and per-part retries.
MULTIPART_THRESHOLD: Final = 16 * 1024 * 1024
MULTIPART_CHUNKSIZE: Final = 16 * 1024 * 1024

_TEMP_RE: Final = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
_HASH_CHUNK: Final = 1024 * 1024


# -- locations --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Location:
    """A parsed location. ``uri`` is the normal form: an absolute local path, or ``s3://bucket[/prefix]``."""

    uri: str
    is_s3: bool
    path: str  # local: absolute OS path; S3: "bucket/prefix" (pyarrow's S3 path form)
    bucket: str = ""
    prefix: str = ""  # S3 key prefix without leading or trailing "/" ("" for the bucket root)

    def key(self, relative: str) -> str:
        """S3 key of ``relative`` (a POSIX path under this location)."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def join(self, *parts: str) -> str:
        """``parts`` joined under this location in its filesystem's path form."""
        return "/".join([self.path.rstrip("/"), *parts])


def parse_location(uri: str) -> Location:
    """Parse a local path (relative, absolute, ``~``, ``file://``) or an ``s3://bucket/prefix`` URI.

    Relative paths are made absolute against the current folder now, so the location means the same thing
    in another process. Raises StoreError for an empty URI, another scheme, or an S3 URI without a bucket.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise StoreError(f"store location {uri!r} is empty; give a folder path or s3://bucket/prefix")
    text = uri.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        bucket = parts.netloc
        prefix = parts.path.strip("/")
        if not bucket or "@" in bucket or parts.query or parts.fragment:
            raise StoreError(
                f"bad S3 location {uri!r}: use s3://bucket/prefix (credentials come from the environment)"
            )
        if "//" in prefix:
            raise StoreError(f"bad S3 location {uri!r}: empty path segment in the prefix")
        normal = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return Location(normal, True, f"{bucket}/{prefix}" if prefix else bucket, bucket, prefix)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StoreError(f"bad file location {uri!r}: use file:///absolute/path")
        text = unquote(parts.path)
    elif scheme and len(scheme) > 1:  # a one-letter "scheme" is a Windows drive, i.e. a path
        raise StoreError(
            f"unsupported store location {uri!r}: use a folder path, file:// or s3://bucket/prefix"
        )
    path = os.path.abspath(os.path.expanduser(text))
    return Location(path, False, path)


def temp_path(final_path: str) -> str:
    """A unique hidden sibling of ``final_path`` to write before an atomic rename onto it."""
    head, name = os.path.split(final_path)
    return os.path.join(head, f".{name}.{uuid.uuid4().hex}.tmp")


def is_temp_name(name: str) -> bool:
    """True for a file name made by :func:`temp_path` (an unfinished write, never real content)."""
    return bool(_TEMP_RE.match(name))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a local file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_md5(path: str | os.PathLike[str]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- S3 client and errors ---------------------------------------------------------------------------------
def s3_client(*, max_attempts: int = 5) -> Any:
    """A boto3 S3 client configured from the environment / instance role by boto3 itself.

    ``max_attempts`` counts the first try; boto3 clients are thread-safe, so one may serve a thread pool.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,
    )
    return boto3.session.Session().client("s3", config=config)


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def s3_error(exc: BaseException, action: str, where: str) -> StoreError:
    """Turn a boto3/botocore exception into one actionable line; access problems become StorageAccessError.

    ``action`` says what we were doing ("upload", "list"), ``where`` names the s3:// URI.
    """
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StorageAccessError(f"{action} {where}: {_NO_CREDENTIALS_HINT}")
    if isinstance(exc, EndpointConnectionError):
        return StorageAccessError(f"{action} {where}: cannot reach the S3 endpoint ({exc}); {_ENDPOINT_HINT}")
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        if code in ("404", "NoSuchBucket"):
            return StorageAccessError(
                f"{action} {where}: the bucket does not exist; create it or fix the URI"
            )
        if code in ("403", "AccessDenied", "AllAccessDisabled"):
            return StorageAccessError(
                f"{action} {where}: access denied; grant this identity access to the prefix"
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            return StorageAccessError(f"{action} {where}: AWS credentials rejected ({code}); refresh them")
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StoreError(f"{action} {where} failed: {first_line}")


_NO_CREDENTIALS_HINT: Final = (
    "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for "
    "temporary keys) or AWS_PROFILE, or run on a host with an instance profile / IAM role"
)
_ENDPOINT_HINT: Final = "check the network and AWS_ENDPOINT_URL when using a non-AWS S3 server"


# -- preflight --------------------------------------------------------------------------------------------
def preflight(uri: str) -> None:
    """Check that a job can write under ``uri`` before it starts; raise StorageAccessError if not.

    S3: credentials present, bucket reachable, and a tiny object ``<prefix>/.trader-preflight-<uuid>`` can be
    put and deleted. Local: the folder exists or can be created, and a file can be created in it.
    """
    location = parse_location(uri)
    if location.is_s3:
        _preflight_s3(location)
    else:
        _preflight_local(location)


def _preflight_local(location: Location) -> None:
    folder = Path(location.path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=PREFLIGHT_PREFIX):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StorageAccessError(
            f"local store {location.uri}: cannot create or write the folder ({reason}); "
            "choose a writable path"
        ) from exc


def _preflight_s3(location: Location) -> None:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    where = location.uri
    if boto3.session.Session().get_credentials() is None:
        raise StorageAccessError(f"S3 store {where}: {_NO_CREDENTIALS_HINT}")
    client = s3_client(max_attempts=2)
    try:
        # A one-key listing rather than HeadBucket: listing is what the store needs (s3:ListBucket), and it
        # names a missing bucket (NoSuchBucket) where HeadBucket only says 404.
        client.list_objects_v2(Bucket=location.bucket, Prefix=location.key(""), MaxKeys=1)
    except ClientError as exc:
        code = _error_code(exc)
        if code in ("404", "NoSuchBucket"):
            raise StorageAccessError(
                f"S3 store {where}: bucket {location.bucket!r} does not exist; create it or fix the store URI"
            ) from exc
        if code in ("403", "AccessDenied"):
            raise StorageAccessError(
                f"S3 store {where}: access denied to bucket {location.bucket!r} (s3:ListBucket); grant this "
                "identity s3:ListBucket on the bucket"
            ) from exc
        raise s3_error(exc, "preflight", where) from exc
    except EndpointConnectionError as exc:
        raise StorageAccessError(f"S3 store {where}: cannot reach the S3 endpoint; {_ENDPOINT_HINT}") from exc
    except BotoCoreError as exc:
        raise s3_error(exc, "preflight", where) from exc

    key = location.key(f"{PREFLIGHT_PREFIX}{uuid.uuid4().hex}")
    grant = f"arn:aws:s3:::{location.bucket}/{location.key('*')}"
    try:
        client.put_object(Bucket=location.bucket, Key=key, Body=b"")
    except ClientError as exc:
        if _error_code(exc) in ("403", "AccessDenied"):
            raise StorageAccessError(
                f"S3 store {where}: access denied for write under the prefix (s3:PutObject); grant "
                f"s3:PutObject and s3:DeleteObject on {grant}"
            ) from exc
        raise s3_error(exc, "preflight write to", where) from exc
    except BotoCoreError as exc:
        raise s3_error(exc, "preflight write to", where) from exc
    try:
        client.delete_object(Bucket=location.bucket, Key=key)
    except ClientError as exc:
        if _error_code(exc) in ("403", "AccessDenied"):
            raise StorageAccessError(
                f"S3 store {where}: access denied for delete under the prefix (s3:DeleteObject; probe "
                f"s3://{location.bucket}/{key} left behind); grant s3:DeleteObject on {grant}"
            ) from exc
        raise s3_error(exc, "preflight delete in", where) from exc
    except BotoCoreError as exc:
        raise s3_error(exc, "preflight delete in", where) from exc


# -- sync -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyncStats:
    """What a sync did: files copied and skipped (already identical), and bytes copied."""

    files_copied: int
    files_skipped: int
    bytes_copied: int


@dataclass(frozen=True)
class _Entry:
    size: int
    etag: str | None = None  # S3 only, without quotes; an md5 of the content when it has no "-"


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD,
        multipart_chunksize=MULTIPART_CHUNKSIZE,
        max_concurrency=4,
        use_threads=True,
    )


def _skippable(name: str) -> bool:
    return is_temp_name(name) or name.startswith(PREFLIGHT_PREFIX)


class _LocalSide:
    """A local folder as one end of a sync. Digests are computed once per file and cached."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.root = Path(location.path)
        self._sha: dict[str, str] = {}

    def path(self, rel: str) -> Path:
        return self.root.joinpath(*rel.split("/"))

    def list(self) -> dict[str, _Entry]:
        entries: dict[str, _Entry] = {}
        if not self.root.is_dir():
            return entries
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                if _skippable(name):
                    continue
                full = Path(folder, name)
                rel = full.relative_to(self.root).as_posix()
                with contextlib.suppress(FileNotFoundError):
                    entries[rel] = _Entry(full.stat().st_size)
        return entries

    def sha256(self, rel: str) -> str:
        if rel not in self._sha:
            self._sha[rel] = file_sha256(self.path(rel))
        return self._sha[rel]

    def md5(self, rel: str) -> str:
        return _file_md5(self.path(rel))


class _S3Side:
    """An S3 prefix as one end of a sync. The sha256 comes from object metadata (one HEAD, cached)."""

    def __init__(self, location: Location, client: Any) -> None:
        self.location = location
        self.client = client
        self._sha: dict[str, str | None] = {}

    def uri(self, rel: str) -> str:
        return f"s3://{self.location.bucket}/{self.location.key(rel)}"

    def list(self) -> dict[str, _Entry]:
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = f"{self.location.prefix}/" if self.location.prefix else ""
        entries: dict[str, _Entry] = {}
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(prefix) :]
                    # Keys ending in "/" are folder markers some tools create; they hold no data.
                    if not rel or rel.endswith("/") or _skippable(rel.rsplit("/", 1)[-1]):
                        continue
                    entries[rel] = _Entry(int(obj["Size"]), str(obj.get("ETag", "")).strip('"') or None)
        except (BotoCoreError, ClientError) as exc:
            raise s3_error(exc, "list", self.location.uri) from exc
        return entries

    def sha256(self, rel: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        if rel not in self._sha:
            try:
                head = self.client.head_object(Bucket=self.location.bucket, Key=self.location.key(rel))
            except (BotoCoreError, ClientError) as exc:
                raise s3_error(exc, "read metadata of", self.uri(rel)) from exc
            self._sha[rel] = head.get("Metadata", {}).get(SHA256_METADATA_KEY)
        return self._sha[rel]


_Side = _LocalSide | _S3Side


def _simple_md5(entry: _Entry) -> str | None:
    # A multipart upload's ETag ("...-N") is not an md5 of the content; a single PUT's is.
    return entry.etag if entry.etag and "-" not in entry.etag else None


def _same_content(src: _Side, dst: _Side, rel: str, src_entry: _Entry, dst_entry: _Entry) -> bool:
    """True when the destination file provably holds the source's bytes (size, then sha256 or md5)."""
    if src_entry.size != dst_entry.size:
        return False
    src_sha, dst_sha = src.sha256(rel), dst.sha256(rel)
    if src_sha is not None and dst_sha is not None:
        return src_sha == dst_sha
    # An object without our sha256 metadata (written by another tool): fall back to a single-PUT ETag.
    src_md5 = src.md5(rel) if isinstance(src, _LocalSide) else _simple_md5(src_entry)
    dst_md5 = dst.md5(rel) if isinstance(dst, _LocalSide) else _simple_md5(dst_entry)
    return src_md5 is not None and src_md5 == dst_md5


def _replace_local(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def _download(src: _S3Side, rel: str, target: Path) -> None:
    """Download to a temp sibling of ``target``, check the sha256 when known, then rename into place."""
    from botocore.exceptions import BotoCoreError, ClientError

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(temp_path(str(target)))
    try:
        try:
            src.client.download_file(
                src.location.bucket, src.location.key(rel), str(tmp), Config=_transfer_config()
            )
        except (BotoCoreError, ClientError) as exc:
            raise s3_error(exc, "download", src.uri(rel)) from exc
        expected = src.sha256(rel)
        if expected is not None and file_sha256(tmp) != expected:
            raise StoreError(
                f"download {src.uri(rel)}: sha256 does not match the object's metadata; rerun sync"
            )
        _replace_local(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _upload(path: Path, sha256: str, dst: _S3Side, rel: str) -> None:
    """Upload with the sha256 in metadata; S3 shows the object only once the PUT or multipart completes."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        dst.client.upload_file(
            str(path),
            dst.location.bucket,
            dst.location.key(rel),
            ExtraArgs={"Metadata": {SHA256_METADATA_KEY: sha256}},
            Config=_transfer_config(),
        )
    except (BotoCoreError, ClientError) as exc:
        raise s3_error(exc, "upload", dst.uri(rel)) from exc


def _copy_one(src: _Side, dst: _Side, rel: str) -> None:
    """Copy one file so that the destination shows either the old file or the complete new one."""
    try:
        if isinstance(src, _LocalSide) and isinstance(dst, _LocalSide):
            target = dst.path(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(temp_path(str(target)))
            try:
                shutil.copyfile(src.path(rel), tmp)
                _replace_local(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        elif isinstance(src, _LocalSide) and isinstance(dst, _S3Side):
            _upload(src.path(rel), src.sha256(rel), dst, rel)
        elif isinstance(src, _S3Side) and isinstance(dst, _LocalSide):
            _download(src, rel, dst.path(rel))
        elif isinstance(src, _S3Side) and isinstance(dst, _S3Side):
            with tempfile.TemporaryDirectory(prefix="trader-sync-") as scratch:
                staged = Path(scratch, "object")
                _download(src, rel, staged)
                _upload(staged, src.sha256(rel) or file_sha256(staged), dst, rel)
    except OSError as exc:
        raise StoreError(f"copy {rel} from {src.location.uri} to {dst.location.uri} failed: {exc}") from exc


def _side(location: Location, client: Any | None) -> _Side:
    return _S3Side(location, client) if location.is_s3 else _LocalSide(location)


def sync(
    src: str,
    dst: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    max_workers: int = 8,
) -> SyncStats:
    """Copy every file under ``src`` to the same relative path under ``dst`` (local folder or S3, either way).

    A file whose destination already has the same size and sha256 is skipped, so rerunning after an
    interruption copies only what is missing or different. Each file is copied atomically (temp name then
    rename locally; S3 shows an upload only when complete), so an interruption never leaves a partial file.
    Files at the destination that are not in the source are left alone.

    ``progress(files_done, files_total)`` is called in the calling thread after each file is copied or
    skipped; if it raises, files not yet started are cancelled, files in flight finish, and the exception
    propagates. ``max_workers`` files are copied at once. Raises StoreError when ``src`` holds no files,
    StorageAccessError when S3 refuses access.

    Example::

        stats = sync("s3://research-bars/v1", "/data/bars")
        print(stats.files_copied, stats.files_skipped, stats.bytes_copied)
    """
    source, target = parse_location(src), parse_location(dst)
    if source.uri == target.uri:
        raise StoreError(f"sync source and destination are the same location {source.uri}")
    client = s3_client() if source.is_s3 or target.is_s3 else None
    src_side, dst_side = _side(source, client), _side(target, client)

    entries = src_side.list()
    if not entries:
        raise StoreError(f"nothing to sync: no files under {source.uri}; check the source location")
    existing = dst_side.list()
    total = len(entries)
    copied = skipped = copied_bytes = 0

    def work(rel: str) -> int:
        """Bytes copied for ``rel``; -1 when skipped."""
        dst_entry = existing.get(rel)
        if dst_entry is not None and _same_content(src_side, dst_side, rel, entries[rel], dst_entry):
            return -1
        _copy_one(src_side, dst_side, rel)
        return entries[rel].size

    pool = ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="trader-sync")
    pending: set[Future[int]] = {pool.submit(work, rel) for rel in sorted(entries)}
    try:
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                result = future.result()
                if result < 0:
                    skipped += 1
                else:
                    copied += 1
                    copied_bytes += result
                if progress is not None:
                    progress(copied + skipped, total)
    finally:
        # On an error or a raising progress callback: drop what has not started, let running copies finish.
        pool.shutdown(wait=True, cancel_futures=True)
    return SyncStats(files_copied=copied, files_skipped=skipped, bytes_copied=copied_bytes)
