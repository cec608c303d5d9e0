"""trader: the trading library (Python + numba + polars/pyarrow). Never imports ray, cluster or jobs."""

from __future__ import annotations

__version__ = "0.1.0"
