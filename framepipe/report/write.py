"""Writing the HTML report (:func:`write_report`): static pages for the records of one or more
outputs written by ``framepipe sample`` or ``framepipe caption``.

Records are streamed: each one's card (:mod:`.cards`) goes to one of two temporary files,
failed records' or the others', while the summary is counted (:mod:`.page`); then the pages
are cut from them, failed records first, ``page_size`` cards a page, and moved into place,
so memory stays flat however many records there are. The first page is the one named, with
the summary, the commonest errors and the list of pages; page ``k`` is ``<stem>-<k>.html``
beside it (so that every page links the frames by the same relative paths)::

    from framepipe.report import write_report
    write_report(["out/manifest.jsonl"], "out/report.html")
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from framepipe.errors import ConfigError, FramepipeError, OutputError
from framepipe.inputs.remote import is_remote, remote_stat, stage
from framepipe.output import is_folder_output, read_output
from framepipe.output.checks import nearest_existing
from framepipe.output.store import journal_of, kept_records, no_records_in, ordered_units
from framepipe.report.cards import Images, card
from framepipe.report.page import GENERATOR, TAIL, Stats, head, page_name

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

PAGE_SIZE = 1000
"""Cards on a page by default: a page a browser opens at once (about 2.5 MB)."""


def write_report(
    records_paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    out_html: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    thumbnails: bool = True,
    embed: bool = False,
    title: str = "framepipe report",
    storage_options: dict[str, Any] | None = None,
    page_size: int = PAGE_SIZE,
) -> Path:
    """Write the HTML report of the records in ``records_paths`` to ``out_html``.

    A records path may be a JSONL or Parquet file, a folder of part files, or a
    ``framepipe sample`` output folder (its manifest); each clip is shown once, across all
    the local paths (the record ``merge`` keeps: the latest, never a failed one over an ok
    one). Frame paths in a record are relative to ``base_dir`` when given, else to the
    folder of the records file they come from. ``thumbnails`` shows every frame
    with its label (else the contact sheet only, where there is one); ``embed`` inlines
    downsized JPEGs as ``data:`` URIs instead of linking the files. A records path may also be
    a URI in an object store (``s3://``, ``gs://``, with ``storage_options`` for fsspec): its
    records are downloaded and its frames always embedded (a browser cannot open such links).
    Failed records come first; ``page_size`` cards go on a page (0: all on one), the first
    page at ``out_html``, page k beside it as ``<stem>-<k>.html`` (pages of an earlier,
    longer report there are removed). Returns the first page's path.
    """
    if page_size < 0:
        raise ConfigError(f"page_size ({page_size}) must be >= 0 (0: one page)")
    if isinstance(records_paths, (str, os.PathLike)):
        records_paths = [records_paths]
    names = [os.fspath(p) for p in records_paths]
    if not names:
        raise OutputError("no records file given for the report")
    paths: list[Path | str] = [p if is_remote(p) else _records_file(Path(p)) for p in names]
    out = Path(out_html)
    _check_replaceable(out, [p for p in paths if isinstance(p, Path)])
    stats = Stats()
    try:
        _make_folder(out)
        with (
            tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as staged,
            open(Path(staged, "failed"), "w+", encoding="utf-8", newline="\n") as failed,
            open(Path(staged, "others"), "w+", encoding="utf-8", newline="\n") as others,
        ):
            local = [p for p in paths if isinstance(p, Path)]
            for rec, imgs, origin in itertools.chain(
                _local_records(local, base_dir, out.parent, embed),
                _remote_records(paths, staged, base_dir, out.parent, storage_options),
            ):
                stats.add(rec)
                to = failed if rec.get("status") == "failed" else others
                to.write(card(rec, stats.total, imgs, thumbnails, origin))  # one line
            size = page_size or max(stats.total, 1)
            pages = max(1, -(-stats.total // size))
            targets = [out.with_name(page_name(out.name, k)) for k in range(1, pages + 1)]
            for t in targets[1:]:
                _check_replaceable(t, [p for p in paths if isinstance(p, Path)])
            failed.seek(0)
            others.seek(0)
            cards = itertools.chain(failed, others)
            for k, target in enumerate(targets, 1):
                with open(Path(staged, target.name), "w", encoding="utf-8") as fh:
                    fh.write(head(title, stats, paths, out.name, k, pages, size))
                    fh.writelines(itertools.islice(cards, size))
                    fh.write(TAIL)
            for target in reversed(targets):  # the first page, which links the others, last
                os.replace(Path(staged, target.name), target)
        _remove_pages_after(out, pages)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write ({exc.strerror or exc})") from exc
    log.info(
        "%s: %d records (%d ok, %d failed) on %d page(s)",
        out, stats.total, stats.ok, stats.failed, pages,
    )  # fmt: skip
    return out


def _local_records(
    paths: list[Path], base_dir: PathLike | None, html_dir: Path, embed: bool
) -> Iterator[tuple[dict[str, Any], Images, str]]:
    """The records of the local ``paths`` read as one output (one record per clip across
    them all, as ``merge`` keeps: part files given one by one, a re-run's outputs), each with
    the images of the file it comes from and that file's name."""
    if not paths:
        return
    images: dict[str, Images] = {}  # by folder: part files beside each other share one
    with kept_records(ordered_units(paths)) as (_, survivors):
        for unit, rec in survivors:
            base = str(base_dir or unit.path.parent)
            if base not in images:
                images[base] = Images(base, html_dir, embed)
            yield rec, images[base], unit.path.name


def _remote_records(
    paths: list[Path | str],
    staged: str,
    base_dir: PathLike | None,
    html_dir: Path,
    options: dict[str, Any] | None,
) -> Iterator[tuple[dict[str, Any], Images, str]]:
    """The records of the store URIs among ``paths``: each staged here, its images inlined
    from the store."""
    for k, path in enumerate(paths):
        if isinstance(path, Path):
            continue
        local = _stage(path, staged, k, options)
        base = str(base_dir or path.rstrip("/").rpartition("/")[0])
        if local.name == "manifest.jsonl" and not path.endswith(".jsonl"):
            base = str(base_dir or path.rstrip("/"))  # a sample output folder
        imgs = Images(base, html_dir, True, options)
        for rec in read_output(local):  # one record per clip, JSONL or Parquet
            yield rec, imgs, path.rpartition("/")[2]


def _remove_pages_after(out: Path, pages: int) -> None:
    """Remove the pages after the last of this report that an earlier, longer one left."""
    k = pages + 1
    while (old := out.with_name(page_name(out.name, k))).is_file() and _is_report(old):
        old.unlink()
        k += 1


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


def _make_folder(out: Path) -> None:
    """Create ``out``'s folder; a file in its way (``-o notes.txt/report.html``) is an
    OutputError naming it, not the OS's bare 'File exists' or 'Not a directory'."""
    parent = nearest_existing(out.parent)
    if not parent.is_dir():
        raise OutputError(f"{out}: cannot create the report ({parent} is not a folder)")
    out.parent.mkdir(parents=True, exist_ok=True)


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
        if not jsonl.exists():
            raise no_records_in(p)
        p = jsonl
    if not p.is_file():
        raise OutputError(f"{p}: no such records file")
    return p


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
    return GENERATOR.encode() in head or (
        head.startswith(b"<!DOCTYPE html>") and b'<select id="f-status">' in head
    )
