"""Draw docs/grafana-dashboard.json from its own queries against a live fleet (``make dashboard``).

Grafana cannot run here, so this tool does what Grafana would, for the subset of it the
dashboard uses, and writes the picture the docs show (``docs/_static/dashboard.svg``):

1. **A live fleet.** It starts the bundled exchange simulator (``resilient_trading.testing``),
   two small bot processes trading on it through the library (a shared IP budget, shared
   breakers, one address budget and one store each, :class:`EventMetrics` served on their
   own port) and ``resilient-trading metrics --listen 127.0.0.1:0 --state-dir DIR``, the
   fleet exporter. A short script of faults plays on the simulator besides its 1% of random
   faults: a 4 s outage (every request a 503: retries, then the shared ``info`` breaker
   opens, and closes again after its trial) and a history backfill by one bot that fills
   the IP budget (the limiter makes the bots wait; no 429).
2. **Scrapes** every endpoint once a second (``--seconds``, 90 by default), as Prometheus does
   (``job`` and ``instance`` labels added, a vanished series marked stale).
3. **Evaluates each panel's PromQL** at every scrape, like a Grafana range query with a 1 s
   step. The subset is what the dashboard uses: selectors with ``=``/``!=`` matchers,
   ``rate``/``increase`` over a range, ``sum``/``min``/``max``/``count``/``avg`` with
   ``by (...)``, ``histogram_quantile``, ``time()``, ``vector(n)``, ``+ - * /``, the
   comparisons as filters, and ``or``. Anything else raises :class:`QueryError` naming the
   panel and the query, so the JSON and the picture cannot drift apart silently.
4. **Renders** every panel at its ``gridPos`` in one SVG (pure Python, a dark Grafana-like
   theme): rows, ``stat``, ``timeseries`` and ``state-timeline`` panels, with the units,
   thresholds, value mappings and legend formats the JSON gives. An unknown panel type is an
   error too. With ``--png`` it also writes a PNG through headless Chromium
   (``/usr/bin/chromium``) or ``rsvg-convert``, when one is installed.

Usage::

    python tools/render_dashboard.py                      # 90 s live run, writes the SVG
    python tools/render_dashboard.py --seconds 20 --png   # shorter, plus a PNG
    python tools/render_dashboard.py --save-samples s.json   # keep the scrapes...
    python tools/render_dashboard.py --replay s.json         # ...and redraw without a run

The parts live in ``tools/dashboard/``: ``samples.py`` (what the scrapes saw), ``promql.py``
(the query subset), ``panels.py`` (the JSON checked; units, thresholds, mappings), ``svg.py``
(the drawing) and ``fleet.py`` (the live fleet and its scrapes). This file is the command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the tools package importable
    sys.path.insert(0, str(ROOT))

from tools.dashboard.fleet import run_bot, run_fleet, to_png  # noqa: E402
from tools.dashboard.panels import check_dashboard  # noqa: E402
from tools.dashboard.samples import Samples  # noqa: E402
from tools.dashboard.svg import render_svg  # noqa: E402

DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
OUT_SVG = ROOT / "docs" / "_static" / "dashboard.svg"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="how long to scrape (90)")
    parser.add_argument("--interval", type=float, default=1.0, help="scrape interval (1 s)")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="the JSON to draw")
    parser.add_argument("--out", type=Path, default=OUT_SVG, help="the SVG to write")
    parser.add_argument("--png", action="store_true", help="also write a PNG beside the SVG")
    parser.add_argument("--save-samples", type=Path, help="write the scrapes as JSON")
    parser.add_argument("--replay", type=Path, help="draw saved scrapes instead of a live run")
    bot = parser.add_argument_group("one bot of the fleet (used by the tool itself)")
    bot.add_argument("--bot", help=argparse.SUPPRESS)
    bot.add_argument("--state-dir", help=argparse.SUPPRESS)
    bot.add_argument("--url", help=argparse.SUPPRESS)
    bot.add_argument("--t0", help=argparse.SUPPRESS)
    bot.add_argument("--lasts-hours", type=float, default=6.0, help=argparse.SUPPRESS)
    bot.add_argument("--order-every", type=int, default=2, help=argparse.SUPPRESS)
    bot.add_argument("--pace", type=float, default=0.25, help=argparse.SUPPRESS)
    bot.add_argument("--backfill", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bot:
        return run_bot(args)
    dashboard = json.loads(args.dashboard.read_text())
    check_dashboard(dashboard)  # fail before a minute of scraping, not after
    if args.replay:
        samples = Samples.from_json(json.loads(args.replay.read_text()))
    else:
        samples = run_fleet(args.seconds, args.interval)
    if args.save_samples:
        args.save_samples.write_text(json.dumps(samples.to_json()))
    if len(samples.times) < 2:
        raise SystemExit("fewer than two scrapes: nothing to draw")
    seconds = samples.times[-1] - samples.times[0]
    subtitle = f"Last {seconds:.0f} s · UTC"
    svg = render_svg(
        dashboard,
        samples,
        subtitle=subtitle,
        rendered_by=(
            "Rendered from the dashboard's own queries against live exporters by "
            "tools/render_dashboard.py; Grafana draws the same panels."
        ),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(svg)
    print(f"wrote {args.out} ({len(samples.times)} scrapes over {seconds:.0f} s)")
    if args.png:
        png = args.out.with_suffix(".png")
        tool = to_png(args.out, png)
        print(f"wrote {png} with {tool}" if tool else "no chromium or rsvg-convert: no PNG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
