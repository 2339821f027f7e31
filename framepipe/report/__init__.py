"""The browsable HTML report of the records of one or more outputs written by ``framepipe
sample`` or ``framepipe caption``: static pages with a summary (ok / failed counts, sources,
models, the commonest errors, and a banner when any answer comes from a model with random
weights), filters by status and kind, a text search, and one card per clip: source, clip
range, sampler, the frames (labelled with index and time, or view name), the questions and
answers, or the error. Failed records come first, a page holds :data:`PAGE_SIZE` cards
(``page_size=``), and the first page lists the others. Images are linked by paths relative to
the HTML file; ``embed=True`` inlines small JPEG thumbnails instead, so the file can be
mailed::

    from framepipe.report import write_report
    write_report(["out/manifest.jsonl"], "out/report.html")

Writing, paging and what may be replaced: :mod:`.write`; a record's card: :mod:`.cards`;
the summary and the pages around the cards: :mod:`.page`.
"""

from framepipe.report.cards import SHEET_SIDE, THUMB_SIDE
from framepipe.report.write import PAGE_SIZE, write_report

__all__ = ["PAGE_SIZE", "SHEET_SIDE", "THUMB_SIDE", "write_report"]
