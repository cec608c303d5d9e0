"""GatewayConfig: everything that shapes one simulated gateway, validated once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from trader.errors import ConfigError
from trader.ibsim.protocol import DEFAULT_SERVER_VERSION, MAX_SERVER_VERSION, MIN_CLIENT_VERSION

_ACCOUNT_RE: Final = re.compile(r"^[A-Z]{1,3}\d{4,10}$")


@dataclass(frozen=True)
class GatewayConfig:
    """Settings of a :class:`~trader.ibsim.server.SimGateway`.

    Units: prices in USD, quantities in shares, ``speed`` in replayed bar-seconds per wall second (60 replays
    one 1m bar a second; 0 = bars advance only when :meth:`SimGateway.advance` is called), ``spread_bps`` the
    quoted bid/ask spread in basis points of the last price, ``max_volume_share`` the fraction (0-1] of a
    bar's volume one event may fill (None = no cap), ``pacing_per_second`` the client messages per second
    allowed before error 100.

    >>> GatewayConfig(port=0, account="DU1234567", symbols=("SPY",)).server_version
    176
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0 = any free port; read SimGateway.port after start
    account: str = "DU1234567"  # DU... is a paper account; U1234567 looks live (for testing refusals)
    server_version: int = DEFAULT_SERVER_VERSION  # ceiling of the version negotiation, 157-178
    store: str | None = None  # bar store URI for replay and historical data; None = prices via set_price
    interval: str = "1m"  # bar interval replayed from the store
    symbols: tuple[str, ...] = ("SPY",)
    start: str | None = None  # first bar replayed (ISO date/time, UTC); None = the first stored bar
    end: str | None = None  # replay stops before this time; None = the last stored bar
    speed: float = 0.0
    commission_per_share: float = 0.005
    min_commission: float = 1.0
    max_volume_share: float | None = 0.1
    max_order_qty: float | None = None  # larger orders are rejected with error 201
    pacing_per_second: int = 50
    initial_cash: float = 1_000_000.0
    spread_bps: float = 2.0
    allow_fractional: bool = False  # IB refuses fractional share orders over the API by default
    market_data_type: int = 1  # 1 live, 3 delayed: what a client gets before it calls reqMarketDataType
    first_order_id: int = 1  # nextValidId for a fresh account
    primary_exchange: str = "ARCA"
    extra_accounts: tuple[str, ...] = field(default=())  # more managed accounts (advisor setups)

    def __post_init__(self) -> None:
        if not MIN_CLIENT_VERSION <= self.server_version <= MAX_SERVER_VERSION:
            raise ConfigError(
                f"ibsim server_version {self.server_version} is outside {MIN_CLIENT_VERSION}-"
                f"{MAX_SERVER_VERSION}; pick a version in that range (176 = ib_insync 0.9.86, 178 = ib_async)"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"ibsim port {self.port} is not a TCP port; use 0-65535 (0 = any free port)")
        for account in (self.account, *self.extra_accounts):
            if not _ACCOUNT_RE.match(account):
                raise ConfigError(f"ibsim account {account!r} does not look like an IB account (DU1234567)")
        if not self.symbols:
            raise ConfigError("ibsim needs at least one symbol; pass symbols=('SPY',) or --symbols SPY")
        if self.speed < 0:
            raise ConfigError(f"ibsim speed {self.speed} is negative; use 0 (manual) or a positive factor")
        if self.max_volume_share is not None and not 0 < self.max_volume_share <= 1:
            raise ConfigError(f"ibsim max_volume_share {self.max_volume_share} must be in (0, 1] or None")
        if self.max_order_qty is not None and self.max_order_qty <= 0:
            raise ConfigError(f"ibsim max_order_qty {self.max_order_qty} must be positive or None")
        if self.pacing_per_second <= 0:
            raise ConfigError(f"ibsim pacing_per_second {self.pacing_per_second} must be positive")
        if self.commission_per_share < 0 or self.min_commission < 0:
            raise ConfigError("ibsim commissions must not be negative")
        if self.market_data_type not in (1, 2, 3, 4):
            raise ConfigError(f"ibsim market_data_type {self.market_data_type} must be 1, 2, 3 or 4")
        object.__setattr__(self, "symbols", tuple(s.upper() for s in self.symbols))

    @property
    def is_paper(self) -> bool:
        """True for a paper-trading account (IB names them DU...)."""
        return self.account.startswith("DU")
