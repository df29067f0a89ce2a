"""``python -m resilient_trading ...``: the same as the ``resilient-trading`` command."""

from __future__ import annotations

import sys

from resilient_trading._cli import main

if __name__ == "__main__":
    sys.exit(main())
