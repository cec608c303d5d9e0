"""The broker layer: order model, approvals, order journal, IBKR adapter.

Orders flow one way (see ARCHITECTURE.md): an :class:`OrderIntent` from a session, an :class:`Approval` from
risk (signed; execution verifies it), the order journal records every step, and :class:`IBAdapter` talks
to the gateway. The adapter is imported lazily (``from trader.broker.adapter import IBAdapter``) because it
pulls in the client library.
"""

from __future__ import annotations

from trader.broker.errors import (
    ApprovalError,
    ApprovalExpiredError,
    ApprovalIntentMismatchError,
    ApprovalRejectedError,
    ApprovalSignatureError,
    ApprovalTamperedError,
    BrokerConnectionError,
    BrokerError,
    ClientLibraryError,
    ContractError,
    DuplicateIntentError,
    JournalError,
    JournalNotWritableError,
    NotAJournalError,
    NotConnectedError,
    OrderNotOpenError,
    OrderValidationError,
    PaperOnlyError,
    UnknownIntentError,
)
from trader.broker.journal import IntentState, JournalEvent, OrderJournal
from trader.broker.order import (
    Approval,
    Fill,
    OrderIntent,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    derive_intent_id,
)

__all__ = [
    "Approval",
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
    "Fill",
    "IntentState",
    "JournalError",
    "JournalEvent",
    "JournalNotWritableError",
    "NotAJournalError",
    "NotConnectedError",
    "OrderIntent",
    "OrderJournal",
    "OrderNotOpenError",
    "OrderStatus",
    "OrderType",
    "OrderValidationError",
    "PaperOnlyError",
    "Side",
    "TimeInForce",
    "UnknownIntentError",
    "derive_intent_id",
]
