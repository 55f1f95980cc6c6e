"""``python -m bot report DIR [--compare DIR2]``: re-render a replay run's report and print its summary.

DIR is a run directory written by ``python -m bot replay ... --report DIR``; the command writes
``report.json``, ``plots/*.png`` and ``report.html`` into it again (the same bytes for the same run) and
prints the key figures with their intervals and the verdicts against buy-and-hold and the no-model baseline.
``--compare DIR2`` also reads DIR2 (writing nothing there) and prints both runs side by side; when both are
sampled on the same grid the paired difference of their returns gets a verdict too.

Bad input (no such directory, no run.json, a damaged events line) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from replay.report import analyse, compare_table, render, summary_table
from replay.report_data import ReportError, load_run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="render a replay run's report (report.json, plots, HTML) and print its summary")
    p.add_argument("run_dir", type=Path, metavar="DIR", help="run directory written by `python -m bot replay`")
    p.add_argument("--compare", type=Path, default=None, metavar="DIR2", help="a second run to put beside it")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    try:
        run = load_run(args.run_dir)
        an = render(run, args.run_dir)
        out = [summary_table(an.report), f"wrote {args.run_dir / 'report.json'}, {args.run_dir / 'report.html'}"]
        if args.compare is not None:
            other = analyse(load_run(args.compare))
            out += ["", compare_table(an, other)]
    except ReportError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    sys.stdout.write("\n".join(out) + "\n")
    return 0
