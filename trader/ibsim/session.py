"""One API client connection: handshake, framed reads, an ordered write queue, pacing and subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trader.ibsim import messages as msg
from trader.ibsim.faults import TokenBucket
from trader.ibsim.protocol import (
    ProtocolError,
    decode_fields,
    encode_message,
    negotiate,
    read_frame,
    read_handshake,
)

if TYPE_CHECKING:
    from trader.ibsim.server import SimGateway

log = logging.getLogger("trader.ibsim")

PACING_ERROR = "Max rate of messages per second has been exceeded:max={max} rec={rec} (3)"


@dataclass
class Subscriptions:
    """What a client has asked to be kept up to date about (reqId -> symbol where there is one)."""

    positions: bool = False
    account_updates: bool = False
    account_multi: set[int] = field(default_factory=set)
    account_summary: dict[int, str] = field(default_factory=dict)  # reqId -> tags asked
    market_data: dict[int, str] = field(default_factory=dict)
    realtime_bars: dict[int, str] = field(default_factory=dict)
    history_updates: dict[int, str] = field(default_factory=dict)  # keepUpToDate historical requests

    def clear_market_data(self) -> None:
        self.market_data.clear()
        self.realtime_bars.clear()
        self.history_updates.clear()


class ClientSession:
    """A connected socket. ``client_id`` is set once startApi arrives; ``version`` after the handshake."""

    def __init__(
        self, gateway: SimGateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.gw = gateway
        self.reader = reader
        self.writer = writer
        self.version = 0
        self.client_id: int | None = None
        self.ready = False
        self.subs = Subscriptions()
        self.market_data_type = gateway.config.market_data_type
        self.peer = writer.get_extra_info("peername")
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._bucket = TokenBucket(gateway.config.pacing_per_second)
        self._pacing_reported_at = -1.0
        self._refused = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"ClientSession(clientId={self.client_id}, version={self.version}, peer={self.peer})"

    # -- writing -----------------------------------------------------------------------------------

    def send(self, fields: list[object]) -> None:
        """Queue one message; it leaves in order once the stall gate is open."""
        if not self._closed:
            self._queue.put_nowait(encode_message(fields))

    def error(self, req_id: int, code: int, text: str) -> None:
        self.send(msg.error(self.version, req_id, code, text))
        self.gw.events.bump(f"errors:{code}")

    async def _write_loop(self) -> None:
        while True:
            data = await self._queue.get()
            closing = data is None
            chunks = [] if data is None else [data]
            while not closing and not self._queue.empty():  # coalesce what is already queued into one write
                more = self._queue.get_nowait()
                if more is None:
                    closing = True
                else:
                    chunks.append(more)
            if chunks:
                await self.gw.gate.wait()
                self.writer.write(b"".join(chunks))
                await self.writer.drain()
            if closing:
                self.writer.close()  # graceful: what was written still arrives, then FIN
                return

    # -- lifecycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        writer_task: asyncio.Task[None] | None = None
        try:
            client_range = await read_handshake(self.reader)
            version = negotiate(client_range, self.gw.config.server_version)
            if version is None:
                log.warning("refusing %s: client versions %s", self.peer, client_range)
                return
            self.version = version
            writer_task = asyncio.create_task(self._write_loop())
            now = dt.datetime.now(dt.UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"
            self.writer.write(encode_message([version, now]))  # the handshake reply is never stalled
            while True:
                fields = decode_fields(await read_frame(self.reader))
                if fields:
                    self._receive(fields)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolError as exc:
            log.warning("closing %s: %s", self.peer, exc)
        finally:
            self._closed = True
            self.gw._session_closed(self)
            if writer_task is not None:
                writer_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await writer_task
            self.abort()

    def close_after_flush(self) -> None:
        """Close once what is queued has been written (used after error 326); later sends are dropped."""
        self._queue.put_nowait(None)
        self._closed = True

    def abort(self) -> None:
        """Drop the connection at once (RST), as a crashed gateway or a network cut would."""
        self._closed = True
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()

    # -- reading -----------------------------------------------------------------------------------

    def _receive(self, fields: list[str]) -> None:
        if self.ready and not self._bucket.take():
            self._refused += 1
            now = asyncio.get_running_loop().time()
            if now - self._pacing_reported_at >= 1.0:  # one error 100 per second of flooding
                self._pacing_reported_at = now
                rate = self.gw.config.pacing_per_second
                self.error(-1, 100, PACING_ERROR.format(max=rate, rec=rate + self._refused))
            return
        self.gw.handle(self, fields)
