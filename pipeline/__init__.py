"""points-import: load loyalty point transactions into Voyado Engage, exactly once."""

from __future__ import annotations

__version__ = "0.1.0"
