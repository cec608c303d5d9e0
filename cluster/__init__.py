"""The Ray layer, and the only package that imports ray (built in the walk-forward issue)."""

from __future__ import annotations
