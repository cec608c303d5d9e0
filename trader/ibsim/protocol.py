"""The TWS API socket protocol: handshake, framing and field encoding.

How a real TWS / IB Gateway talks to an API client (and so how we do):

1. The client connects and sends the 4 bytes ``API\\0`` followed by one length-prefixed text
   ``v<min>..<max>[ <options>]`` (e.g. ``v157..176`` or ``v157..176 +PACEAPI``): the range of *server
   versions* it can decode.
2. The server answers with one framed message of two fields, ``<version>`` and the connection time
   (``yyyymmdd hh:mm:ss <tz>``), where ``version`` is the highest version both sides speak. A client whose
   range lies wholly below :data:`MIN_CLIENT_VERSION` (or wholly above our ceiling) is refused by closing the
   socket, as the real gateway does.
3. The client sends ``startApi`` (message id 71) with its client id; from then on both directions exchange
   framed messages.

A framed message is a 4-byte big-endian length followed by that many bytes of UTF-8 text: the fields, each
terminated by a NUL byte (so the text ends with NUL). The first field is the message id; many messages then
carry a message *version* (unrelated to the server version) and the rest are positional. Which fields exist
depends on the negotiated server version; see :mod:`trader.ibsim.messages`.

Encoding of values (what the real gateway writes): ``None`` -> empty; ``bool`` -> ``1``/``0``; ``int`` ->
decimal; ``float`` -> Python's shortest repr (``400.0``), with IB's "unset double" written the Java way
(``1.7976931348623157E308``) and integral quantities without a trailing ``.0`` left to the caller.
"""

from __future__ import annotations

import asyncio
import math
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

MIN_CLIENT_VERSION: Final = 157  # the oldest server version ib_insync / ib_async accept (TWS 10.20-ish)
MAX_SERVER_VERSION: Final = 178  # the newest layout this simulator writes
DEFAULT_SERVER_VERSION: Final = 176  # ib_insync 0.9.86's MaxClientVersion

API_PREFIX: Final = b"API\0"
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024  # real TWS refuses larger; protects us from garbage lengths

UNSET_DOUBLE: Final = 1.7976931348623157e308  # sys.float_info.max: IB's "no value" for doubles
UNSET_INTEGER: Final = 2**31 - 1  # IB's "no value" for ints
UNSET_DOUBLE_TEXT: Final = "1.7976931348623157E308"  # how the (Java) gateway prints it

_RANGE_RE: Final = re.compile(r"^v(\d+)(?:\.\.(\d+))?(?:\s+(.*))?$")
_LENGTH: Final = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer broke the framing or the handshake; the connection is closed."""


@dataclass(frozen=True)
class VersionRange:
    """The server versions a client says it can decode, and its connect options (e.g. ``+PACEAPI``)."""

    low: int
    high: int
    options: str = ""


def format_field(value: object) -> str:
    """One field as the gateway writes it (see the module docstring).

    >>> [format_field(v) for v in (None, True, 3, 2.5, UNSET_DOUBLE, "SPY")]
    ['', '1', '3', '2.5', '1.7976931348623157E308', 'SPY']
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == UNSET_DOUBLE:
            return UNSET_DOUBLE_TEXT
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if math.isnan(value):
            return ""
        return repr(value)
    text = str(value)
    if "\0" in text:
        raise ValueError(f"a field may not contain NUL: {text!r}")
    return text


def encode_message(fields: Iterable[object]) -> bytes:
    """Frame ``fields`` as one message: length prefix, then each field NUL-terminated.

    >>> encode_message([49, 1, 1700000000])
    b'\\x00\\x00\\x00\\x1049\\x001\\x001700000000\\x00'
    """
    body = "".join(format_field(f) + "\0" for f in fields).encode()
    return _LENGTH.pack(len(body)) + body


def decode_fields(body: bytes) -> list[str]:
    """Split one message body (without its length prefix) into its text fields."""
    text = body.decode(errors="backslashreplace")
    fields = text.split("\0")
    if fields and fields[-1] == "":
        fields.pop()  # every field is NUL-terminated, so the split leaves one empty tail
    return fields


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """Read one length-prefixed message body; raises IncompleteReadError at EOF."""
    head = await reader.readexactly(_LENGTH.size)
    (length,) = _LENGTH.unpack(head)
    if length > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {length} bytes is larger than {MAX_MESSAGE_BYTES}")
    return await reader.readexactly(length)


async def read_handshake(reader: asyncio.StreamReader) -> VersionRange:
    """Read the client's ``API\\0`` prefix and version range."""
    prefix = await reader.readexactly(len(API_PREFIX))
    if prefix != API_PREFIX:
        raise ProtocolError(f"expected the API prefix, got {prefix!r}")
    return parse_version_range((await read_frame(reader)).decode(errors="replace"))


def parse_version_range(text: str) -> VersionRange:
    """Parse ``v157..176`` (or ``v176``, or ``v157..176 +PACEAPI``).

    >>> parse_version_range("v157..176 +PACEAPI")
    VersionRange(low=157, high=176, options='+PACEAPI')
    """
    match = _RANGE_RE.match(text.strip("\0 "))
    if not match:
        raise ProtocolError(f"bad version range {text!r}; expected v<min>..<max>")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if high < low:
        raise ProtocolError(f"bad version range {text!r}: max below min")
    return VersionRange(low, high, (match.group(3) or "").strip())


def negotiate(client: VersionRange, ceiling: int) -> int | None:
    """The server version to speak: ``min(client max, ceiling)``; None when the ranges do not meet.

    >>> negotiate(VersionRange(157, 178), 176), negotiate(VersionRange(100, 151), 176)
    (176, None)
    """
    version = min(client.high, ceiling)
    if version < max(client.low, MIN_CLIENT_VERSION):
        return None
    return version


class FieldReader:
    """Reads the positional fields of one incoming message, front to back.

    Numbers arrive as text (``"100.0"``, ``""`` for unset); ints written as floats are accepted. Reading past
    the end raises ProtocolError, which the session answers with error 321 rather than dropping the socket.
    """

    def __init__(self, fields: Sequence[str], start: int = 0) -> None:
        self.fields = fields
        self.pos = start

    def __len__(self) -> int:
        return len(self.fields) - self.pos

    def text(self) -> str:
        if self.pos >= len(self.fields):
            raise ProtocolError(f"message {self.fields[:1]} is short: no field {self.pos}")
        value = self.fields[self.pos]
        self.pos += 1
        return value

    def integer(self, default: int = 0) -> int:
        raw = self.text().strip()
        if not raw:
            return default
        try:
            return int(raw)
        except ValueError:
            try:
                return int(float(raw))
            except ValueError as exc:
                raise ProtocolError(f"field {self.pos - 1} is not an integer: {raw!r}") from exc

    def number(self, default: float | None = None) -> float | None:
        raw = self.text().strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError as exc:
            raise ProtocolError(f"field {self.pos - 1} is not a number: {raw!r}") from exc
        return default if value == UNSET_DOUBLE else value

    def flag(self) -> bool:
        raw = self.text().strip()
        return raw not in ("", "0", "false", "False")

    def skip(self, count: int = 1) -> None:
        self.pos += count
