"""Live session state without Ray: bar windows per stream, built bars, indicators, gaps, quality, lifecycle.

The session actors in cluster/actors/ hold these objects; nothing here imports Ray, sleeps or reads the wall
clock. See :mod:`trader.session.window`, :mod:`trader.session.data`, :mod:`trader.session.gaps` and
:mod:`trader.session.lifecycle`.
"""

from __future__ import annotations

from trader.session.data import Bar, SessionData, StreamQuality
from trader.session.gaps import FillRequest, Gap, GapFiller, GapTracker
from trader.session.lifecycle import CloseActions, LifecycleError, SessionLifecycle, SessionState, Transition
from trader.session.window import BarWindow, to_ns

__all__ = [
    "Bar",
    "BarWindow",
    "CloseActions",
    "FillRequest",
    "Gap",
    "GapFiller",
    "GapTracker",
    "LifecycleError",
    "SessionData",
    "SessionLifecycle",
    "SessionState",
    "StreamQuality",
    "Transition",
    "to_ns",
]
