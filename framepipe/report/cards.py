"""One record as a card of the HTML report: source, clip range, sampler, labelled frames
(linked relative to the page, or inlined as small JPEGs), questions and answers, or the
error. Everything taken from a record is escaped (file names and answers are untrusted), and
a card is one line of HTML (line breaks in a record's text are character references), so
that cards can be streamed through temporary files and cut into pages."""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import posixpath
import urllib.parse
from pathlib import Path
from typing import Any

from framepipe.errors import FramepipeError
from framepipe.inputs.remote import filesystem, is_remote
from framepipe.output.images import fmt_time
from framepipe.utils import shown_text

log = logging.getLogger(__name__)

THUMB_SIDE = 256
"""Longest side of an embedded frame thumbnail, in pixels."""
SHEET_SIDE = 1024
"""Longest side of an embedded contact sheet, in pixels."""


def model_name(model: dict[str, Any]) -> str:
    name = str(model.get("id") or model.get("path") or "?")
    return f"{name}@{model['revision']}" if model.get("revision") else name


class Images:
    """Image URLs for one records file: relative to the HTML file, or inlined thumbnails."""

    def __init__(
        self, base: str, html_dir: Path, embed: bool, options: dict[str, Any] | None = None
    ) -> None:
        self.remote, self.options = is_remote(base), options
        self.base = base if self.remote else os.path.abspath(base)
        self.html_dir = os.path.abspath(html_dir)
        self.embed = embed or self.remote  # a browser cannot open s3:// or gs:// links
        self.prefix = None if self.remote else self._relative(self.base)
        self.checked = False  # (whether a linked image was looked for)

    def url(self, rel: str, max_side: int) -> str | None:
        """``src`` for the image at ``rel`` (None when it cannot be embedded)."""
        if self.remote:
            uri = rel if is_remote(rel) else f"{self.base.rstrip('/')}/{rel}"
            uri = posixpath.normpath(uri).replace(":/", "://", 1)
            return _data_uri(uri, max_side, self.options)
        if self.embed:
            return _data_uri(os.path.join(self.base, rel), max_side)
        if not self.checked:  # one stat a records file: moved without its frames?
            self.checked = True
            if not os.path.exists(os.path.join(self.base, rel)):
                log.warning(
                    "%s: no such image: the frames of the records read relative to %s are "
                    "not there (moved without them? --base-dir names their folder)",
                    os.path.join(self.base, rel), self.base,
                )  # fmt: skip
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


def esc(v: object) -> str:
    """``v`` as HTML text or attribute value; its line breaks as character references, so
    that a card stays one line."""
    text = html.escape(shown_text(str(v)), quote=True)
    return text.replace("\n", "&#10;").replace("\r", "&#13;")


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


def card(rec: dict[str, Any], n: int, imgs: Images, thumbnails: bool, origin: str) -> str:
    status = str(rec.get("status") or "ok")
    kind = str(rec.get("kind") or "?")
    model = rec.get("model") if isinstance(rec.get("model"), dict) else None
    meta = [kind, _clip_text(rec), _sampler_text(rec)]
    if model is not None:
        meta.append("model " + model_name(model))
    h = [
        f'<section class="card {esc(status)}" id="r{n}" data-status="{esc(status)}" '
        f'data-kind="{esc(kind)}"><h2><span class="st">{esc(status)}</span> '
        f"{esc(rec.get('source'))}</h2>"
        f'<p class="meta">{" · ".join(esc(m) for m in meta if m)} · <span class="from">'
        f"{esc(origin)} #{n}</span></p>"
    ]
    if model is not None and model.get("random_weights"):
        h.append('<p class="rw">random weights: these answers are noise</p>')
    if rec.get("error"):
        h.append(f'<p class="err">{esc(rec["error"])}</p>')
    h.append(_images(rec, imgs, thumbnails))
    questions, answers = _as_list(rec.get("questions")), _as_list(rec.get("answers"))
    if questions or answers:
        h.append('<dl class="qa">')
        for k in range(max(len(questions), len(answers))):
            q = questions[k] if k < len(questions) else ""
            a = answers[k] if k < len(answers) else "(no answer)"
            h.append(f"<dt>{esc(q)}</dt><dd>{esc(a)}</dd>")
        h.append("</dl>")
    h.append("</section>\n")
    return "".join(h)


def _images(rec: dict[str, Any], imgs: Images, thumbnails: bool) -> str:
    """Labelled frame thumbnails, or the contact sheet, or the frame labels alone."""
    frames = [str(f) for f in _as_list(rec.get("frames"))]
    sheet = rec.get("contact_sheet")
    h = []
    if thumbnails and frames:
        h.append('<div class="frames">')
        for label, rel in zip(_labels(rec, len(frames)), frames):
            src = imgs.url(rel, THUMB_SIDE)
            img = f'<img src="{esc(src)}" alt="{esc(label)}" loading="lazy">' if src else "missing"
            if src and not imgs.embed:
                img = f'<a href="{esc(src)}">{img}</a>'
            h.append(f"<figure>{img}<figcaption>{esc(label)}</figcaption></figure>")
        h.append("</div>")
        if sheet and not imgs.embed:
            href = imgs.url(str(sheet), SHEET_SIDE)
            h.append(f'<p class="meta"><a href="{esc(href)}">contact sheet</a></p>')
    elif sheet and (src := imgs.url(str(sheet), SHEET_SIDE)):
        h.append(f'<img class="sheet" src="{esc(src)}" alt="contact sheet" loading="lazy">')
    elif rec.get("indices"):
        labels = _labels(rec, len(_as_list(rec.get("indices"))))
        h.append(f'<p class="meta">frames (not saved): {esc(", ".join(labels))}</p>')
    return "".join(h)
