"""Typed errors of the broker layer: order model, approvals, journal, client library, adapter.

All subclass :class:`trader.errors.TraderError`, so the command line prints one line and exits non-zero.
Approval errors each name what does not match, so a refused order says why in the log.
"""

from __future__ import annotations

from trader.errors import TraderError

__all__ = [
    "ApprovalError",
    "ApprovalExpiredError",
    "ApprovalIntentMismatchError",
    "ApprovalRejectedError",
    "ApprovalSignatureError",
    "ApprovalTamperedError",
    "BrokerConnectionError",
    "BrokerError",
    "ClientLibraryError",
    "ContractError",
    "DuplicateIntentError",
    "JournalError",
    "JournalNotWritableError",
    "NotAJournalError",
    "NotConnectedError",
    "OrderNotOpenError",
    "OrderValidationError",
    "UnknownIntentError",
]


class BrokerError(TraderError):
    """Base class of every broker-layer error."""


class OrderValidationError(BrokerError, ValueError):
    """An order intent (or fill) with a bad field; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"order field {field}: {message}")
        self.field = field


# -- approvals ---------------------------------------------------------------------------------------------


class ApprovalError(BrokerError):
    """An approval that does not authorise this intent; the execution side must not send the order."""


class ApprovalSignatureError(ApprovalError):
    """The signature does not match the approval's content: tampered, or signed with another secret."""


class ApprovalIntentMismatchError(ApprovalError):
    """The approval was issued for another intent (its intent_id differs)."""


class ApprovalTamperedError(ApprovalError):
    """The intent differs from the one approved; ``fields`` names each differing field."""

    def __init__(self, message: str, fields: tuple[str, ...]) -> None:
        super().__init__(message)
        self.fields = fields


class ApprovalRejectedError(ApprovalError):
    """The approval is a rejection (approved is false); ``reason`` says why risk refused it."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ApprovalExpiredError(ApprovalError):
    """The approval is older than the allowed age (or dated in the future beyond the clock skew)."""


# -- journal -----------------------------------------------------------------------------------------------


class JournalError(BrokerError):
    """The order journal cannot be opened, read or written, or a record contradicts it."""


class JournalNotWritableError(JournalError):
    """The journal's file or folder cannot be written."""


class NotAJournalError(JournalError):
    """The file exists but is not an order journal (not SQLite, or no journal schema row)."""


class UnknownIntentError(BrokerError, KeyError):
    """No intent with this intent_id (in the journal, or among the adapter's orders)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# -- client library and adapter ----------------------------------------------------------------------------


class ClientLibraryError(BrokerError):
    """An unknown client library name, or one that is not installed."""


class BrokerConnectionError(BrokerError):
    """The gateway could not be reached, refused the client id, or dropped the connection."""


class NotConnectedError(BrokerConnectionError):
    """A request that needs a connection was made while disconnected."""


class ContractError(BrokerError):
    """A symbol the gateway cannot qualify to exactly one contract."""


class DuplicateIntentError(BrokerError):
    """An order for this intent_id is already known to the gateway; sending it again could double trade."""


class OrderNotOpenError(BrokerError):
    """A cancel for an intent whose order is not open (never sent, already filled or cancelled)."""


class PaperOnlyError(BrokerError):
    """A live account or live port while ``ibkr.paper_only`` is true: the execution side refuses to trade."""
