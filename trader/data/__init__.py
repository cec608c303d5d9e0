"""Bars: schema, Parquet store, CSV ingest, synthetic generator, validation."""

from __future__ import annotations
