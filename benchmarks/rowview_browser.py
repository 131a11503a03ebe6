"""The row view at 8192 keys in headless Chromium: report size and load time.

Writes the report of 10 heads × 8192-key rows (the synthetic retrieval-like rows of ``tests/test_rowview.py``:
a sink on key 0, the mass on a 4-token needle) into a folder with its ``plotly.min.js``, then opens it ``--loads``
times in one headless Chromium (a fresh tab each time) and reports the median time from navigation to the row view
drawn (``performance.now()`` recorded by the page when its plot first holds the row), with the machine's load average beside it.

    python benchmarks/rowview_browser.py               # 5 loads
    python benchmarks/rowview_browser.py --loads 9 --keys 4096
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--keys", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=10)
    a = ap.parse_args(argv)
    if a.loads < 1 or a.keys < 6000 or a.heads < 1:
        print("error: --loads and --heads must be at least 1 and --keys at least 6000 (the needle sits at 5000)", file=sys.stderr)
        return 2
    from _browser import Browser, ensure_chromium
    from test_rowview import synthetic_view

    from interp.plot.export import write_report

    exe, reason = ensure_chromium()
    if exe is None:
        print(f"error: no headless Chromium: {reason}", file=sys.stderr)
        return 2
    out = Path(tempfile.mkdtemp(prefix="rowview-bench-"))
    report = write_report(out / "report.html", "row view", [("rows", synthetic_view(a.keys, a.heads))])
    js = out / "plotly.min.js"
    print(f"report.html {report.stat().st_size / 1e6:.2f} MB ({a.heads} heads x {a.keys} keys), "
          f"plotly.min.js {js.stat().st_size / 1e6:.2f} MB")
    import plotly.graph_objects as go

    # the floor: a page of the same folder with one tiny plotly figure (parsing plotly.js is most of a load)
    floor = write_report(out / "floor.html", "floor", [("one point", go.Figure(go.Scatter(x=[0], y=[0])))])
    browser = Browser(exe)
    times, floors = [], []
    try:
        for _ in range(a.loads):
            page = browser.open(report)
            page.wait_until("document.querySelector('.interp-rowview').dataset.drawn", timeout=120)
            times.append(float(page.evaluate("document.querySelector('.interp-rowview').dataset.drawnAt")) / 1000)
            assert page.errors() == [], page.errors()
            page = browser.open(floor)
            page.wait_until("document.querySelector('.js-plotly-plot .main-svg')", timeout=120)
            floors.append(float(page.evaluate("performance.now()")) / 1000)
    finally:
        browser.close()
    print(f"load to row view drawn: median {statistics.median(times):.2f} s over {a.loads} loads "
          f"(min {min(times):.2f}, max {max(times):.2f}); a one-point plotly page: median {statistics.median(floors):.2f} s; "
          f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
