"""Shared fixtures: the real-data corpus, a real S3 server on loopback, isolated environments, this test's
Ray workers, and headless Chromium for report pages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: the real-bar corpus. Missing data fails loudly under CI, skips elsewhere."""
    if not (SHARED_DATA / "PROVENANCE.md").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the real-data corpus is missing at {SHARED_DATA}")
        pytest.skip(f"real-data corpus not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API server (moto's server mode) on 127.0.0.1, one per test session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture()
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3, pyarrow and polars at the loopback S3 server through the environment only."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return s3_endpoint


@pytest.fixture()
def s3_bucket(s3_env: str) -> str:
    """A fresh, empty bucket on the loopback server; returns its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state letter


def descendant_task_pids(task_name: str) -> list[int]:
    """Ray workers now running task ``task_name`` in *this* test's cluster: descendants of this process,
    never another cluster's workers on the same machine."""
    me = os.getpid()
    prefix = f"ray::{task_name}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if not cmdline.startswith(prefix):
            continue
        pid = ancestor = int(entry.name)
        while ancestor > 1 and ancestor != me:
            ancestor = _parent(ancestor)
        if ancestor == me:
            pids.append(pid)
    return pids


@pytest.fixture()
def task_pids() -> Callable[[str], list[int]]:
    """``task_pids("_fold_task")``: see :func:`descendant_task_pids`."""
    return descendant_task_pids


# -- headless Chromium (report pages) ---------------------------------------------------------------------
ERROR_RECORDER = """<script>
(function () {
  var errs = [];
  function rec(m) {
    errs.push(String(m));
    document.documentElement.setAttribute("data-js-errors", JSON.stringify(errs));
  }
  document.documentElement.setAttribute("data-js-errors", "[]");
  window.addEventListener("error", function (e) {
    rec("error: " + (e.message || (e.target && (e.target.src || e.target.href)) || e.type));
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    rec("unhandled rejection: " + (e.reason && e.reason.message ? e.reason.message : e.reason));
  });
  var original = console.error;
  console.error = function () {
    rec("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
</script>"""
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class RenderedPlots(HTMLParser):
    """Which plotly graph divs of a dumped DOM contain a rendered ``svg.main-svg``; the recorded JS errors."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str | None]] = []
        self.plots: dict[str, bool] = {}
        self.errors: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "html" and a.get("data-js-errors") is not None:
            self.errors = json.loads(a["data-js-errors"] or "[]")
        plot = None
        if tag == "div" and "plotly-graph-div" in classes:
            plot = a.get("id") or f"anon-{len(self.plots)}"
            self.plots[plot] = False
        if tag == "svg" and "main-svg" in classes:
            for _, pid in self.stack:
                if pid is not None:
                    self.plots[pid] = True
        if tag not in _VOID:
            self.stack.append((tag, plot))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(
                "CI is set but chromium is not installed (apt-get install -y chromium; `make test` does it)"
            )
        pytest.skip("chromium is not installed (`make test` installs it; set CI=1 to make this a failure)")
    return found


def dump_dom(chromium: str, page: Path) -> tuple[RenderedPlots, str]:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                "--enable-logging=stderr",
                "--v=0",
                f"--user-data-dir={profile}",
                "--window-size=1280,4000",
                "--virtual-time-budget=15000",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    scan = RenderedPlots()
    scan.feed(proc.stdout)
    scan.close()
    assert scan.errors is not None, "the error recorder did not run: " + proc.stderr[-2000:]
    return scan, proc.stderr


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


class HeadlessChromium:
    """A page checker: ``recorder`` (a script to put in <head> that records JS errors on the <html> element),
    ``dump(page) -> (RenderedPlots, stderr)`` and ``console(stderr)`` (Chromium's console lines)."""

    recorder = ERROR_RECORDER

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def dump(self, page: Path) -> tuple[RenderedPlots, str]:
        return dump_dom(self.binary, page)

    @staticmethod
    def console(stderr: str) -> list[str]:
        return console_lines(stderr)


@pytest.fixture()
def headless_chromium() -> HeadlessChromium:
    """Debian's chromium, headless (skips without it; fails under CI, where `make test` installs it)."""
    return HeadlessChromium(chromium_path())
