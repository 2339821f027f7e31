"""The pages of the HTML report around the cards: the summary counted while the records
stream by (:class:`Stats`), the head of each page, the index of pages, the style and the
filter script."""

from __future__ import annotations

import re
import urllib.parse
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.report.cards import esc, model_name

GENERATOR = '<meta name="generator" content="framepipe report">'


MAX_ERROR_KINDS = 100
"""Kinds of error the summary tells apart; the failures of any others are counted together."""
SHOWN_ERROR_KINDS = 20
"""Kinds of error listed on the first page, the commonest first."""


@dataclass
class ErrorKind:
    count: int
    example: str
    """The source of its first failed record."""
    first: int
    """The number of its first failed record's card (``r<n>``)."""
    rank: int
    """Its first failed record's place among the failed records (from 0): they come first,
    so it is on page ``rank // page_size + 1``."""


@dataclass
class Stats:
    """The summary of the records, counted as they stream by: counts and digests only."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    source_hashes: array[int] = field(default_factory=lambda: array("q"))
    kinds: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    random_models: Counter[str] = field(default_factory=Counter)
    errors: dict[str, ErrorKind] = field(default_factory=dict)

    def add(self, rec: dict[str, Any]) -> None:
        self.total += 1
        status = str(rec.get("status") or "ok")
        self.statuses[status] += 1
        self.ok += status == "ok"
        self.source_hashes.append(hash(str(rec.get("source"))))
        self.kinds[str(rec.get("kind") or "?")] += 1
        model = rec.get("model")
        if isinstance(model, dict):
            name = model_name(model)
            self.models[name] += 1
            if model.get("random_weights"):
                self.random_models[name] += 1
        if status == "failed":
            kind = error_kind(rec)
            if kind not in self.errors and len(self.errors) >= MAX_ERROR_KINDS:
                kind = "(other errors)"
            if kind in self.errors:
                self.errors[kind].count += 1
            else:
                self.errors[kind] = ErrorKind(1, str(rec.get("source")), self.total, self.failed)
            self.failed += 1

    @property
    def sources(self) -> int:
        """How many sources the records name."""
        return int(np.unique(np.frombuffer(self.source_hashes, dtype=np.int64)).size)


def error_kind(rec: dict[str, Any]) -> str:
    """A failed record's error without its source and with numbers as ``N`` (so that
    ``frame 12`` and ``frame 40`` are one kind) on one line, after the stage that failed,
    if named."""
    error, source = str(rec.get("error") or "(no error given)"), str(rec.get("source"))
    error = error.removeprefix(f"{source}: ").replace(source, "<source>")
    error = re.sub(r"\d+", "N", " ".join(error.split()))[:300]
    return f"[{rec['stage']}] {error}" if rec.get("stage") else error


def page_name(name: str, k: int) -> str:
    """The file name of page ``k`` (from 1) of the report named ``name``."""
    if k == 1:
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}-{k}.{suffix}" if dot and stem else f"{name}-{k}"


def head(
    title: str, s: Stats, paths: list[Path | str], name: str, k: int, pages: int, size: int
) -> str:
    """The start of page ``k`` of ``pages`` (``size`` cards each, failed ones first) of the
    report ``name``: the summary, and on the first page the commonest errors and the pages."""

    def options(counts: Counter[str]) -> str:
        return "".join(
            f'<option value="{esc(k)}">{esc(k)} ({v})</option>' for k, v in sorted(counts.items())
        )

    models = ", ".join(f"{esc(m)} ({c})" for m, c in s.models.most_common()) or "none"
    where = f" · page {k} of {pages}" if pages > 1 else ""
    h = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'{GENERATOR}<meta name="viewport" content="width=device-width">'
        f"<title>{esc(title)}{where}</title>"
        f"<style>{_CSS}</style></head><body><header><h1>{esc(title)}{where}</h1>"
    ]
    if s.random_models:
        which = ", ".join(esc(m) for m in s.random_models)
        h.append(
            f'<div class="banner">{sum(s.random_models.values())} of {s.total} records come '
            f"from a model with random weights ({which}): their answers are noise, "
            "not captions.</div>"
        )
    h.append(
        f'<p class="sum">clips: <b>{s.total}</b> (<b>{s.ok}</b> ok, <b class="bad">'
        f"{s.failed}</b> failed) · sources: {s.sources} · models: {models}</p>"
        f'<p class="meta">from {esc(", ".join(str(p) for p in paths))}</p>'
    )
    if pages > 1:
        h.append(_pager(name, k, pages))
    if k == 1:
        h.append(_errors(s, name, size) + _page_list(s, name, pages, size))
    shown = min(size, s.total - (k - 1) * size) if pages > 1 else s.total
    h.append(
        f'<nav>status <select id="f-status"><option value="">all</option>{options(s.statuses)}'
        f'</select> kind <select id="f-kind"><option value="">all</option>{options(s.kinds)}'
        f'</select> <input id="f-text" type="search" placeholder="search source, answer, error">'
        f' <span id="f-count">{shown} shown</span></nav></header><main>\n'
    )
    return "".join(h)


def _link(name: str, k: int, text: str, anchor: str = "", here: int = 0) -> str:
    """A link to page ``k`` (``anchor`` on it) from page ``here``."""
    href = anchor if k == here and anchor else urllib.parse.quote(page_name(name, k)) + anchor
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def _pager(name: str, k: int, pages: int) -> str:
    links = [_link(name, 1, "first page (summary)")] if k > 1 else []
    if k > 1:
        links.append(_link(name, k - 1, "previous"))
    if k < pages:
        links += [_link(name, k + 1, "next"), _link(name, pages, "last")]
    return f'<p class="pager">{" · ".join(links)}</p>'


def _errors(s: Stats, name: str, size: int) -> str:
    """The commonest kinds of error, each with a link to its first failed record."""
    if not s.errors:
        return ""
    kinds = sorted(s.errors.items(), key=lambda kv: -kv[1].count)
    rows = []
    for kind, e in kinds[:SHOWN_ERROR_KINDS]:
        page = e.rank // size + 1 if size else 1
        example = _link(name, page, e.example, f"#r{e.first}", here=1)
        rows.append(f"<tr><td>{e.count}</td><td>{esc(kind)}</td><td>{example}</td></tr>")
    more = len(kinds) - SHOWN_ERROR_KINDS
    rest = f'<p class="meta">and {more} other kinds of error</p>' if more > 0 else ""
    return (
        '<details open class="errors"><summary>errors by kind (failed records come first)'
        "</summary><table><tr><th>failed</th><th>error</th><th>first</th></tr>"
        f"{''.join(rows)}</table>{rest}</details>"
    )


def _page_list(s: Stats, name: str, pages: int, size: int) -> str:
    if pages < 2:
        return ""
    items = []
    for k in range(1, pages + 1):
        a, b = (k - 1) * size + 1, min(k * size, s.total)
        bad = max(0, min(b, s.failed) - a + 1)
        what = f"{bad} failed" if bad == b - a + 1 else (f"{bad} failed, rest ok" if bad else "ok")
        items.append(f"<li>{_link(name, k, f'page {k}')}: records {a}–{b} ({what})</li>")
    return (
        f'<details class="pages"><summary>{pages} pages of {size} records</summary>'
        f"<ol>{''.join(items)}</ol></details>"
    )


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}
header{background:#fff;padding:8px 16px;border-bottom:1px solid #ccc;
position:sticky;top:0;z-index:1}
h1{font-size:20px;margin:4px 0}h2{font-size:15px;margin:0 0 4px;word-break:break-all}
main{padding:12px 16px}.card{background:#fff;border:1px solid #ddd;border-radius:6px;
padding:10px;margin:0 0 12px}.card[hidden]{display:none}.card.failed{border-color:#c00}
.st{font-size:12px;padding:1px 6px;border-radius:3px;background:#2a7;color:#fff}
.failed .st{background:#c00}.meta{color:#666;font-size:12px;margin:2px 0}
.err,.bad{color:#c00}.err{font-family:monospace;white-space:pre-wrap}
.banner,.rw{background:#c60;color:#fff;font-weight:bold;padding:8px;border-radius:4px}
.rw{display:inline-block;padding:2px 6px;font-size:12px;margin:2px 0}
.frames{display:flex;flex-wrap:wrap;gap:6px}figure{margin:0}
figure img{height:120px;display:block;background:#ddd}
figcaption{font-size:11px;color:#444}.sheet{max-width:100%}
.errors td,.errors th{text-align:left;padding:1px 8px 1px 0;vertical-align:top}
dt{font-weight:bold;margin-top:6px}dd{margin:2px 0 0 12px;white-space:pre-wrap}
"""

TAIL = """</main><script>
(function(){var cards=[].slice.call(document.querySelectorAll('.card')),
texts=cards.map(function(c){return c.textContent.toLowerCase();}),
st=document.getElementById('f-status'),kd=document.getElementById('f-kind'),
q=document.getElementById('f-text'),cnt=document.getElementById('f-count'),timer;
function apply(){var s=st.value,k=kd.value,t=q.value.trim().toLowerCase(),n=0;
for(var i=0;i<cards.length;i++){var c=cards[i],show=(!s||c.dataset.status===s)&&
(!k||c.dataset.kind===k)&&(!t||texts[i].indexOf(t)>=0);c.hidden=!show;if(show)n++;}
cnt.textContent=n+' shown';}
q.addEventListener('input',function(){clearTimeout(timer);timer=setTimeout(apply,150);});
st.addEventListener('change',apply);kd.addEventListener('change',apply);})();
</script></body></html>
"""
