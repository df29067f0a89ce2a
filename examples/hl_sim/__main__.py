"""Moved: ``python -m resilient_trading.testing`` (this shim runs it)."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from resilient_trading.testing.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
