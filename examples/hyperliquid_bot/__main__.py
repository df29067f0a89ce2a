"""``python -m examples.hyperliquid_bot --config ...``: the bot (see ``bot.py``)."""

from __future__ import annotations

import sys

from examples.hyperliquid_bot.bot import main

if __name__ == "__main__":
    sys.exit(main())
