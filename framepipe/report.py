"""The browsable HTML report: one self-contained static page for the records of one or more
JSONL files written by ``framepipe sample`` or ``framepipe caption``.

The page has a summary (ok / failed counts, sources, models, and a banner when any answer comes
from a model with random weights), filters by status and kind, a text search, and one card
per clip: source, clip range, sampler, the frames (labelled with index and time, or view
name), the questions and answers, or the error. Images are linked by paths relative to the
HTML file; ``embed=True`` inlines small JPEG thumbnails instead, so the file can be mailed.

Records are streamed: the cards go to a temporary file while the summary is counted, then the
page is assembled and moved into place, so memory stays flat however many records there are.
Everything taken from the records is escaped (file names and answers are untrusted)::

    from framepipe.report import write_report
    write_report(["out/manifest.jsonl"], "out/report.html")
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import logging
import os
import posixpath
import shutil
import tempfile
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framepipe.errors import FramepipeError, OutputError
from framepipe.inputs.remote import filesystem, is_remote, remote_stat, stage
from framepipe.output import is_folder_output, read_output
from framepipe.output.images import fmt_time
from framepipe.output.store import journal_of
from framepipe.utils import shown_text

log = logging.getLogger(__name__)

THUMB_SIDE = 256
"""Longest side of an embedded frame thumbnail, in pixels."""
SHEET_SIDE = 1024
"""Longest side of an embedded contact sheet, in pixels."""


def write_report(
    records_paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    out_html: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    thumbnails: bool = True,
    embed: bool = False,
    title: str = "framepipe report",
    storage_options: dict[str, Any] | None = None,
) -> Path:
    """Write the HTML report of the records in ``records_paths`` to ``out_html``.

    A records path may be a JSONL or Parquet file, a folder of part files, or a
    ``framepipe sample`` output folder (its manifest); each clip is shown once (its latest
    record). Frame paths in a record are relative to ``base_dir`` when given, else to the
    folder of the records file they come from. ``thumbnails`` shows every frame
    with its label (else the contact sheet only, where there is one); ``embed`` inlines
    downsized JPEGs as ``data:`` URIs instead of linking the files. A records path may also be
    a URI in an object store (``s3://``, ``gs://``, with ``storage_options`` for fsspec): its
    records are downloaded and its frames always embedded (a browser cannot open such links).
    Returns the HTML path.
    """
    if isinstance(records_paths, (str, os.PathLike)):
        records_paths = [records_paths]
    names = [os.fspath(p) for p in records_paths]
    if not names:
        raise OutputError("no records file given for the report")
    paths: list[Path | str] = [p if is_remote(p) else _records_file(Path(p)) for p in names]
    out = Path(out_html)
    _check_replaceable(out, [p for p in paths if isinstance(p, Path)])
    stats = _Stats()
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as staged,
            open(Path(staged, "cards"), "w+", encoding="utf-8") as cards,
        ):
            for k, path in enumerate(paths):
                if isinstance(path, Path):
                    base = str(base_dir or (path if path.is_dir() else path.parent))
                    imgs, local, origin = _Images(base, out.parent, embed), path, path.name
                else:  # a store's records: staged here, images inlined from the store
                    local = _stage(path, staged, k, storage_options)
                    base = str(base_dir or path.rstrip("/").rpartition("/")[0])
                    if local.name == "manifest.jsonl" and not path.endswith(".jsonl"):
                        base = str(base_dir or path.rstrip("/"))  # a sample output folder
                    imgs, origin = (
                        _Images(base, out.parent, True, storage_options),
                        path.rpartition("/")[2],
                    )
                for rec in read_output(local):  # one record per clip, JSONL or Parquet
                    stats.add(rec)
                    cards.write(_card(rec, stats.total, imgs, thumbnails, origin))
            cards.seek(0)
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(_head(title, stats, paths))
                shutil.copyfileobj(cards, fh)
                fh.write(_TAIL)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{out}: cannot write ({exc.strerror or exc})") from exc
    log.info("%s: %d records (%d ok, %d failed)", out, stats.total, stats.ok, stats.failed)
    return out


def _stage(uri: str, folder: str, k: int, options: dict[str, Any] | None) -> Path:
    """A local copy of the records file ``uri`` in a store (a ``sample`` output folder
    there: its ``manifest.jsonl``)."""
    name = uri.rpartition("/")[2]
    if not name.endswith((".jsonl", ".parquet")):
        uri, name = uri.rstrip("/") + "/manifest.jsonl", "manifest.jsonl"
    try:
        stat = remote_stat(uri, options)
        return stage(uri, Path(folder, str(k), name), stat=stat, storage_options=options)
    except FramepipeError as exc:
        raise OutputError(f"{uri}: cannot read the records ({exc})") from None


def _records_file(p: Path) -> Path:
    """The records of ``p``: a file, a folder of part files, or a ``sample`` output folder
    (its ``manifest.jsonl`` or ``manifest.parquet``)."""
    if p.is_dir() and is_folder_output(p):
        return p
    if p.is_dir():
        parquet, jsonl = p / "manifest.parquet", p / "manifest.jsonl"
        # a first Parquet run killed before it folded its records in left its journal only
        if (parquet.is_file() or journal_of(parquet).is_file()) and not jsonl.exists():
            return parquet
        p = jsonl
    if not p.is_file():
        raise OutputError(f"{p}: no such records file")
    return p


_GENERATOR = '<meta name="generator" content="framepipe report">'


def _check_replaceable(out: Path, inputs: list[Path]) -> None:
    """Refuse an ``out`` that is an existing file with content other than a framepipe
    report, such as one of the records read (a slip in ``-o`` must not destroy a file)."""
    if not out.is_file() or _is_report(out):
        return  # a folder fails to open below, with its own message
    for p in inputs:
        with contextlib.suppress(OSError):
            if os.path.samefile(out, p):
                raise OutputError(f"{out}: is one of the records to report; not replaced")
    raise OutputError(
        f"{out}: exists and is not a framepipe report; not replaced "
        "(remove it or choose another -o)"
    )


def _is_report(path: Path) -> bool:
    """Whether ``path`` is empty or a page this module wrote (earlier versions included)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return True  # unreadable: writing over it reports the real problem
    if not head:
        return True
    return _GENERATOR.encode() in head or (
        head.startswith(b"<!DOCTYPE html>") and b'<select id="f-status">' in head
    )


@dataclass
class _Stats:
    total: int = 0
    ok: int = 0
    failed: int = 0
    sources: set[str] = field(default_factory=set)
    kinds: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    random_models: Counter[str] = field(default_factory=Counter)

    def add(self, rec: dict[str, Any]) -> None:
        self.total += 1
        status = str(rec.get("status") or "ok")
        self.statuses[status] += 1
        self.ok += status == "ok"
        self.failed += status == "failed"
        self.sources.add(str(rec.get("source")))
        self.kinds[str(rec.get("kind") or "?")] += 1
        model = rec.get("model")
        if isinstance(model, dict):
            name = _model_name(model)
            self.models[name] += 1
            if model.get("random_weights"):
                self.random_models[name] += 1


def _model_name(model: dict[str, Any]) -> str:
    name = str(model.get("id") or model.get("path") or "?")
    return f"{name}@{model['revision']}" if model.get("revision") else name


class _Images:
    """Image URLs for one records file: relative to the HTML file, or inlined thumbnails."""

    def __init__(
        self, base: str, html_dir: Path, embed: bool, options: dict[str, Any] | None = None
    ) -> None:
        self.remote, self.options = is_remote(base), options
        self.base = base if self.remote else os.path.abspath(base)
        self.html_dir = os.path.abspath(html_dir)
        self.embed = embed or self.remote  # a browser cannot open s3:// or gs:// links
        self.prefix = None if self.remote else self._relative(self.base)

    def url(self, rel: str, max_side: int) -> str | None:
        """``src`` for the image at ``rel`` (None when it cannot be embedded)."""
        if self.remote:
            uri = rel if is_remote(rel) else f"{self.base.rstrip('/')}/{rel}"
            uri = posixpath.normpath(uri).replace(":/", "://", 1)
            return _data_uri(uri, max_side, self.options)
        if self.embed:
            return _data_uri(os.path.join(self.base, rel), max_side)
        posix = rel.replace(os.sep, "/")
        parts = posix.split("/")
        if self.prefix is None or os.path.isabs(rel) or ".." in parts or "." in parts:
            rel_url = self._relative(os.path.join(self.base, rel))
            if rel_url is None:  # another drive (Windows)
                return Path(self.base, rel).as_uri()
        else:
            rel_url = posix if self.prefix == "." else f"{self.prefix}/{posix}"
        return urllib.parse.quote(rel_url, errors="surrogateescape")

    def _relative(self, path: str) -> str | None:
        try:
            return os.path.relpath(path, self.html_dir).replace(os.sep, "/")
        except ValueError:
            return None


def _data_uri(path: str, max_side: int, options: dict[str, Any] | None = None) -> str | None:
    from PIL import Image

    try:
        fs, name = filesystem(path, options) if is_remote(path) else (None, path)
        with fs.open(name, "rb") if fs else open(name, "rb") as fh, Image.open(fh) as src:
            src.draft("RGB", (max_side, max_side))
            img = src.convert("RGB")
        img.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError, FramepipeError) as exc:
        log.warning("%s: cannot embed image (%s)", path, exc)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _e(v: object) -> str:
    return html.escape(shown_text(str(v)), quote=True)


def _as_list(v: object) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _labels(rec: dict[str, Any], n: int) -> list[str]:
    indices, times, views = (_as_list(rec.get(k)) for k in ("indices", "timestamps_s", "views"))
    out = []
    for k in range(n):
        label = f"#{indices[k]}" if k < len(indices) else f"{k + 1}."
        view = views[k] if k < len(views) else None
        t = times[k] if k < len(times) else None
        if isinstance(view, dict) and view.get("name") is not None:
            label += f" {view['name']}"
        elif isinstance(t, (int, float)):
            label += f" {fmt_time(float(t))}"
        out.append(label)
    return out


def _clip_text(rec: dict[str, Any]) -> str:
    clip = rec.get("clip")
    if not isinstance(clip, dict) or not clip:
        return ""
    parts = [str(clip["label"])] if clip.get("label") else []
    a, b = clip.get("start_s"), clip.get("end_s")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        parts.append(f"{fmt_time(a)}–{fmt_time(b)}")
    if clip.get("start_frame") is not None and clip.get("end_frame") is not None:
        parts.append(f"frames [{clip['start_frame']}, {clip['end_frame']})")
    return f"clip {clip.get('index', 0)}: " + ", ".join(parts)


def _sampler_text(rec: dict[str, Any]) -> str:
    s = rec.get("sampler")
    if not isinstance(s, dict):
        return ""
    params = s.get("params")
    inner = ", ".join(f"{k}={v}" for k, v in params.items()) if isinstance(params, dict) else ""
    return f"{s.get('name', '?')} ({inner})" if inner else str(s.get("name", "?"))


def _card(rec: dict[str, Any], n: int, imgs: _Images, thumbnails: bool, origin: str) -> str:
    status = str(rec.get("status") or "ok")
    kind = str(rec.get("kind") or "?")
    model = rec.get("model") if isinstance(rec.get("model"), dict) else None
    meta = [kind, _clip_text(rec), _sampler_text(rec)]
    if model is not None:
        meta.append("model " + _model_name(model))
    h = [
        f'<section class="card {_e(status)}" id="r{n}" data-status="{_e(status)}" '
        f'data-kind="{_e(kind)}"><h2><span class="st">{_e(status)}</span> '
        f"{_e(rec.get('source'))}</h2>"
        f'<p class="meta">{" · ".join(_e(m) for m in meta if m)} · <span class="from">'
        f"{_e(origin)} #{n}</span></p>"
    ]
    if model is not None and model.get("random_weights"):
        h.append('<p class="rw">random weights: these answers are noise</p>')
    if rec.get("error"):
        h.append(f'<p class="err">{_e(rec["error"])}</p>')
    h.append(_images(rec, imgs, thumbnails))
    questions, answers = _as_list(rec.get("questions")), _as_list(rec.get("answers"))
    if questions or answers:
        h.append('<dl class="qa">')
        for k in range(max(len(questions), len(answers))):
            q = questions[k] if k < len(questions) else ""
            a = answers[k] if k < len(answers) else "(no answer)"
            h.append(f"<dt>{_e(q)}</dt><dd>{_e(a)}</dd>")
        h.append("</dl>")
    h.append("</section>\n")
    return "".join(h)


def _images(rec: dict[str, Any], imgs: _Images, thumbnails: bool) -> str:
    """Labelled frame thumbnails, or the contact sheet, or the frame labels alone."""
    frames = [str(f) for f in _as_list(rec.get("frames"))]
    sheet = rec.get("contact_sheet")
    h = []
    if thumbnails and frames:
        h.append('<div class="frames">')
        for label, rel in zip(_labels(rec, len(frames)), frames):
            src = imgs.url(rel, THUMB_SIDE)
            img = f'<img src="{_e(src)}" alt="{_e(label)}" loading="lazy">' if src else "missing"
            if src and not imgs.embed:
                img = f'<a href="{_e(src)}">{img}</a>'
            h.append(f"<figure>{img}<figcaption>{_e(label)}</figcaption></figure>")
        h.append("</div>")
        if sheet and not imgs.embed:
            href = imgs.url(str(sheet), SHEET_SIDE)
            h.append(f'<p class="meta"><a href="{_e(href)}">contact sheet</a></p>')
    elif sheet and (src := imgs.url(str(sheet), SHEET_SIDE)):
        h.append(f'<img class="sheet" src="{_e(src)}" alt="contact sheet" loading="lazy">')
    elif rec.get("indices"):
        labels = _labels(rec, len(_as_list(rec.get("indices"))))
        h.append(f'<p class="meta">frames (not saved): {_e(", ".join(labels))}</p>')
    return "".join(h)


def _head(title: str, s: _Stats, paths: list[Path | str]) -> str:
    def options(counts: Counter[str]) -> str:
        return "".join(
            f'<option value="{_e(k)}">{_e(k)} ({v})</option>' for k, v in sorted(counts.items())
        )

    models = ", ".join(f"{_e(m)} ({c})" for m, c in s.models.most_common()) or "none"
    h = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'{_GENERATOR}<meta name="viewport" content="width=device-width"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head><body><header><h1>{_e(title)}</h1>"
    ]
    if s.random_models:
        which = ", ".join(_e(m) for m in s.random_models)
        h.append(
            f'<div class="banner">{sum(s.random_models.values())} of {s.total} records come '
            f"from a model with random weights ({which}): their answers are noise, "
            "not captions.</div>"
        )
    h.append(
        f'<p class="sum">clips: <b>{s.total}</b> (<b>{s.ok}</b> ok, <b class="bad">'
        f"{s.failed}</b> failed) · sources: {len(s.sources)} · models: {models}</p>"
        f'<p class="meta">from {_e(", ".join(str(p) for p in paths))}</p>'
        f'<nav>status <select id="f-status"><option value="">all</option>{options(s.statuses)}'
        f'</select> kind <select id="f-kind"><option value="">all</option>{options(s.kinds)}'
        f'</select> <input id="f-text" type="search" placeholder="search source, answer, error">'
        f' <span id="f-count">{s.total} shown</span></nav></header><main>\n'
    )
    return "".join(h)


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
dt{font-weight:bold;margin-top:6px}dd{margin:2px 0 0 12px;white-space:pre-wrap}
"""

_TAIL = """</main><script>
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
