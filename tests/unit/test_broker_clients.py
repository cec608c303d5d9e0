"""Client library selection: both libraries load by name; unknown or missing ones fail with a clear line."""

from __future__ import annotations

import importlib
import typing

import pytest

from trader.broker import clients
from trader.broker.clients import CLIENT_LIBRARIES, load_client_library
from trader.broker.errors import ClientLibraryError
from trader.config import IbkrSettings


@pytest.mark.parametrize("name", ["ib_insync", "ib_async"])
def test_each_library_loads_by_name_with_the_api_the_adapter_uses(name: str):
    module = load_client_library(name)
    assert module.__name__ == name
    for attr in ("IB", "Stock", "Order", "ExecutionFilter"):
        assert hasattr(module, attr)


def test_names_match_the_settings_choices():
    annotation = IbkrSettings.model_fields["client_library"].annotation
    assert set(typing.get_args(annotation)) == set(CLIENT_LIBRARIES)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ClientLibraryError, match="ib_insync, ib_async"):
        load_client_library("ibapi")


def test_missing_library_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    real = importlib.import_module

    def fake_import(name: str, *args: object) -> object:
        if name == "ib_async":
            raise ModuleNotFoundError("No module named 'ib_async'")
        return real(name, *args)

    monkeypatch.setattr(clients.importlib, "import_module", fake_import)
    with pytest.raises(ClientLibraryError, match=r"pip install ib_async==2\.1\.0"):
        load_client_library("ib_async")


def test_a_shadowing_module_without_the_api_is_refused(monkeypatch: pytest.MonkeyPatch):
    import types

    monkeypatch.setattr(clients.importlib, "import_module", lambda name: types.ModuleType(name))
    with pytest.raises(ClientLibraryError, match="lacks IB"):
        load_client_library("ib_insync")
