"""The report as one self-contained HTML page: tables of the figures and the plots embedded as base64 PNGs.

Nothing is fetched (no scripts, fonts or stylesheets from elsewhere) and nothing in it depends on when or
where it was rendered, so the same report gives the same page.
"""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any

CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
.note { background: #fff7e0; border: 1px solid #e0c060; padding: 0.5em; }
.beats { color: #1a7f1a; font-weight: bold; } .worse { color: #b01010; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; font-size: 0.8em; }
"""


def duration_text(seconds: float) -> str:
    """A span for people: ``44.1 s``, ``9.8 min``, ``5.2 h``, ``752 d``."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.3g} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:,.0f} d" if seconds >= 1000 * 86400 else f"{seconds / 86400:.3g} d"


def _num(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v * 100:.2f}%" if pct else f"{v:.4g}"
    return escape(str(v))


def _iv(section: dict[str, Any] | None, key: str, pct: bool = False) -> str:
    if not section:
        return "–"
    text = _num(section.get(key), pct)
    iv = section.get(f"{key}_interval")
    if iv and iv.get("low") is not None and iv.get("high") is not None:
        text += f" <small>[{_num(iv['low'], pct)}, {_num(iv['high'], pct)}]</small>"
    return text


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


KEY_ROWS = (
    ("total return", "returns", "total_return", True), ("Sharpe (annualised)", "returns", "sharpe", False),
    ("Sortino (annualised)", "returns", "sortino", False), ("max drawdown", "returns", "max_drawdown", True),
    ("max drawdown duration (s)", "returns", "max_drawdown_duration_s", False),
    ("volatility (annualised)", "returns", "volatility", True), ("end equity", "returns", "end_equity", False),
    ("round trips", "trades", "round_trips", False), ("win rate", "trades", "win_rate", True),
    ("profit factor", "trades", "profit_factor", False), ("mean trip PnL", "trades", "mean_pnl", False),
    ("mean holding (s)", "trades", "mean_holding_s", False), ("fees", "costs", "fees", False),
    ("slippage", "costs", "slippage", False), ("slippage (bps)", "costs", "slippage_bps", False),
    ("turnover (x mean equity)", "costs", "turnover", False), ("time in market", "exposure", "time_in_market", True),
    ("mean gross / equity", "exposure", "mean_gross_leverage", False),
)


def _summary(report: dict[str, Any]) -> str:
    cols = [("strategy", report["portfolio"]), ("buy-and-hold", report["buy_and_hold"])]
    if report.get("baseline"):
        cols.append(("no-model baseline", report["baseline"]))
    rows = [[escape(label), *(_iv(sec.get(part), key, pct) for _, sec in cols)] for label, part, key, pct in KEY_ROWS]
    return _table(["", *(n for n, _ in cols)], rows)


def _comparisons(report: dict[str, Any]) -> str:
    rows = []
    for c in report["comparisons"]:
        iv = c.get("interval") or {}
        cls = c["verdict"] if c["verdict"] in ("beats", "worse") else ""
        rows.append([escape(f"strategy vs {c['vs']}"), escape(c["statistic"]), _num(c.get("difference")),
                     f"[{_num(iv.get('low'))}, {_num(iv.get('high'))}]" if iv else escape(c.get("why", "")),
                     f'<span class="{cls}">{escape(c["verdict"])}</span>'])
    return _table(["comparison", "statistic", "difference", "interval", "verdict"], rows)


def _breakdown(items: dict[str, Any]) -> str:
    rows = []
    for name, s in items.items():
        t, c, e = s["trades"], s["costs"] or {}, s["exposure"] or {}
        rows.append([escape(name), _num(s.get("pnl")), _num(t["round_trips"]), _num(t["open_trips"]),
                     _iv(t, "win_rate", True), _iv(t, "profit_factor"), _num(t.get("mean_holding_s")),
                     _num(c.get("fees")), _num(c.get("slippage")), _num(c.get("slippage_bps")),
                     _num(c.get("traded_notional")), _num(e.get("time_in_market"), True),
                     _num(e.get("mean_gross_notional"))])
    return _table(["", "PnL", "round trips", "open", "win rate", "profit factor", "mean hold s", "fees", "slippage",
                   "slippage bps", "traded notional", "time in market", "mean gross notional"], rows)


def _signals(signals: dict[str, Any]) -> str:
    rows = []
    for model, m in signals.items():
        for h in m["horizons"]:
            const = h.get("constant_call")
            vs = (f"{escape(const['call'])} {_num(const['hit_rate'], True)}: {escape(const['verdict'])}"
                  if const else "–")
            rows.append([escape(model), escape(h["horizon"]), escape(h["source"]), _num(h["signals"]),
                         f"{h['up']} / {h['down']} / {h['flat']}", _num(h.get("scored")),
                         _iv(h, "hit_rate", True), vs, _iv(h, "edge_bps"), _num(h.get("block"))])
    if not rows:
        return "<p>No signals.</p>"
    return _table(["model", "horizon", "from", "signals", "up / down / flat", "scored", "hit rate",
                   "vs constant call", "edge bps", "block"], rows)


def _attention(att: dict[str, Any]) -> str:
    if not att:
        return "<p>No attention summaries (no signal carried one).</p>"
    parts = []
    for model, a in att.items():
        labels = a["labels"]
        rows = [[escape(lab), _num(a["mean_weight"][lab]), _num(a["top_count"][lab])] for lab in labels]
        parts.append(f"<h3>{escape(model)} ({escape(a['kind'])}, {a['signals']} signals)</h3>"
                     + _table(["label", "mean weight", "top-1 count"], rows))
    return "".join(parts)


def _counts(d: dict[str, Any], header: list[str]) -> str:
    if not d:
        return "<p>None.</p>"
    return _table(header, [[escape(str(k)), _num(v)] for k, v in d.items()])


def _books(books: dict[str, Any]) -> str:
    if not books:
        return "<p>No book health events.</p>"
    rows = [[escape(k), _num(b["incidents"]), escape(", ".join(f"{s} {n}" for s, n in b["by_state"].items())),
             escape(", ".join(f"{r} {n}" for r, n in b["by_reason"].items())), _num(b["not_live_s"]),
             _num(b["crossed"]), _num(b["crossed_levels_removed"])] for k, b in books.items()]
    return _table(["book", "incidents", "by state", "by reason", "not live s", "crossed", "levels removed"], rows)


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False)


def page(report: dict[str, Any], images: dict[str, bytes], note: str = "") -> str:
    """The whole page; ``images`` name -> PNG bytes, ``note`` shown on top (e.g. that plots were skipped)."""
    run = report["run"]
    title = f"Replay report: {run['name']}"
    imgs = "".join(f'<h3>{escape(name)}</h3><img alt="{escape(name)}" src="data:image/png;base64,'
                   f'{base64.b64encode(data).decode("ascii")}">' for name, data in sorted(images.items()))
    risk = report["risk"]
    sections = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="note">{escape(note)}</p>' if note else "",
        f"<p>Mode <b>{escape(run['mode'])}</b>; covers <b>{escape(run['coverage'])}</b>; span "
        f"{duration_text(run['span_s'])} sampled every {_num(run['grid']['step_s'])} s ({_num(run['grid_points'])} "
        f"points, {_num(run['grid']['periods_per_year'])} periods a year"
        + (f"; {run['grid']['gaps']} gaps without prices, {duration_text(run['grid']['gap_s'])}, left out"
           if run["grid"]["gaps"] else "") + f"); sources: {escape(', '.join(run['sources']))}; config sha256 "
        f"{escape(str(run.get('config_sha256')))}. Intervals: {int(report['bootstrap']['level'] * 100)}% "
        f"{escape(report['bootstrap']['method'])}, {report['bootstrap']['resamples']} resamples.</p>",
        "<h2>Key figures</h2>", _summary(report), "<h2>Comparisons</h2>",
        "<p>\"beats\" only when the interval of the difference lies above 0; \"worse\" when it lies below.</p>",
        _comparisons(report),
        "<h2>Plots</h2>", imgs or f"<p>{escape(note or 'No plots.')}</p>",
        "<h2>Per strategy</h2>", _breakdown(report["strategies"]),
        "<h2>Per symbol</h2>", _breakdown(report["symbols"]),
        "<h2>Signals and hit rates</h2>", _signals(report["signals"]),
        "<h2>Attention</h2>", _attention(report["attention"]),
        "<h2>Risk gate</h2>", _counts(risk["denials_by_reason"], ["denial reason", "count"]),
        _counts(risk["time_in_state_s"], ["trading state", "seconds"]),
        _counts(risk["strategy_health"], ["strategy health", "count"]),
        "<h2>Book health</h2>", _books(report["books"]),
        "<h2>Feed and models</h2>",
        f"<pre>{escape(_json({'feed': report.get('feed'), 'models': report.get('models')}))}</pre>",
        "<h2>Events</h2>", _counts(report["events"], ["event type", "count"]),
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(s for s in sections if s) + "\n</body></html>\n")
