"""The stocks the simulated gateway knows: stable contract ids and contract matching.

Only US stocks (secType ``STK``, currency USD, routed ``SMART``) exist here. A symbol's ``conId`` is derived
from its name with CRC-32, so it is the same in every process and across restarts (real conIds are IB's
database keys; ours only need to be stable and distinct per symbol).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from trader.ibsim.protocol import FieldReader


def con_id(symbol: str) -> int:
    """The stable contract id of ``symbol`` (a positive int below 2**31).

    >>> con_id("SPY") == con_id("SPY") and con_id("SPY") != con_id("QQQ")
    True
    """
    return 100_000_000 + zlib.crc32(symbol.upper().encode()) % 1_000_000_000


@dataclass(frozen=True)
class Stock:
    """A qualified stock contract as the gateway describes it."""

    symbol: str
    con_id: int
    primary_exchange: str = "ARCA"
    exchange: str = "SMART"
    currency: str = "USD"

    @property
    def local_symbol(self) -> str:
        return self.symbol

    @property
    def trading_class(self) -> str:
        return self.symbol


@dataclass(frozen=True)
class ContractRequest:
    """The 12 contract fields a client sends in a request (conId ... tradingClass)."""

    con_id: int
    symbol: str
    sec_type: str
    last_trade_date: str
    strike: float | None
    right: str
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str

    @classmethod
    def read(cls, reader: FieldReader, *, primary_exchange: bool = True) -> ContractRequest:
        """Read the contract fields in the order the clients write them (``primaryExchange`` optional)."""
        return cls(
            con_id=reader.integer(),
            symbol=reader.text(),
            sec_type=reader.text(),
            last_trade_date=reader.text(),
            strike=reader.number(),
            right=reader.text(),
            multiplier=reader.text(),
            exchange=reader.text(),
            primary_exchange=reader.text() if primary_exchange else "",
            currency=reader.text(),
            local_symbol=reader.text(),
            trading_class=reader.text(),
        )

    def describe(self) -> str:
        return self.symbol or self.local_symbol or f"conId {self.con_id}"


class ContractBook:
    """The tradable stocks, looked up by symbol or conId."""

    def __init__(self, symbols: tuple[str, ...], primary_exchange: str = "ARCA") -> None:
        self._by_symbol = {s.upper(): Stock(s.upper(), con_id(s), primary_exchange) for s in symbols}
        self._by_id = {stock.con_id: stock for stock in self._by_symbol.values()}

    def __contains__(self, symbol: str) -> bool:
        return symbol.upper() in self._by_symbol

    def symbols(self) -> list[str]:
        return sorted(self._by_symbol)

    def get(self, symbol: str) -> Stock | None:
        return self._by_symbol.get(symbol.upper())

    def resolve(self, request: ContractRequest) -> Stock | None:
        """The stock a request names, or None: unknown symbol/conId, or not a USD stock."""
        if request.sec_type.upper() not in ("", "STK"):
            return None
        if request.currency.upper() not in ("", "USD"):
            return None
        if request.con_id:
            stock = self._by_id.get(request.con_id)
            if stock is None or (request.symbol and request.symbol.upper() != stock.symbol):
                return None
            return stock
        name = request.symbol or request.local_symbol
        return self._by_symbol.get(name.upper()) if name else None
