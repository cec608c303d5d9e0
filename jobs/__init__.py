"""Thin entry points: parse arguments, load settings, call cluster/ and trader/, write outputs."""

from __future__ import annotations
