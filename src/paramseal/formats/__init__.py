"""Format adapters: one small interface, one file per format, chosen by extension or content."""

from __future__ import annotations

from .base import GRAPH_KEY, Adapter, Loaded
from .registry import adapter_for, register

__all__ = ["GRAPH_KEY", "Adapter", "Loaded", "adapter_for", "register"]
