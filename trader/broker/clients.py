"""Choosing the IBKR client library: ``ib_insync`` (frozen at 0.9.86) or its maintained fork ``ib_async``.

Both expose the same ``IB``, ``Stock``, ``Order`` API the adapter uses; ``ibkr.client_library`` in the
settings picks one. The module is imported on demand so that code which never talks to a broker does not
pay for (or need) either package.

Example::

    from trader.broker.clients import load_client_library
    ib_lib = load_client_library("ib_async")
    ib = ib_lib.IB()
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Literal, get_args

from trader.broker.errors import ClientLibraryError

__all__ = ["CLIENT_LIBRARIES", "ClientLibraryName", "load_client_library"]

ClientLibraryName = Literal["ib_insync", "ib_async"]
CLIENT_LIBRARIES: tuple[str, ...] = get_args(ClientLibraryName)
# The versions pyproject.toml pins; named in the install hint.
_PINNED = {"ib_insync": "ib_insync==0.9.86", "ib_async": "ib_async==2.1.0"}
# What the adapter needs from the module; checked so a wrong module fails here, not mid-order.
_REQUIRED = ("IB", "Stock", "Order", "ExecutionFilter")


def load_client_library(name: str) -> ModuleType:
    """Import and return the client library ``name`` (``"ib_insync"`` or ``"ib_async"``).

    Raises ClientLibraryError for another name, for a library that is not installed (with the pip command
    that installs it) and for a module that lacks the API the adapter uses.

    >>> load_client_library("ib_insync").__name__
    'ib_insync'
    """
    if name not in CLIENT_LIBRARIES:
        raise ClientLibraryError(
            f"unknown IBKR client library {name!r}; set ibkr.client_library to one of "
            f"{', '.join(CLIENT_LIBRARIES)}"
        )
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise ClientLibraryError(
            f"IBKR client library {name!r} is not installed ({exc}); install it with "
            f"'pip install {_PINNED[name]}' or set ibkr.client_library to the other one"
        ) from None
    missing = [attr for attr in _REQUIRED if not hasattr(module, attr)]
    if missing:
        raise ClientLibraryError(
            f"module {name!r} ({getattr(module, '__file__', '?')}) lacks {', '.join(missing)}; "
            f"is another package shadowing it? reinstall {_PINNED[name]}"
        )
    return module
