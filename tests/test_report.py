"""The HTML report: records from a real ``framepipe sample`` run plus caption-like records
(failed, without frames, from a random-weights model), escaping, relative image paths,
``--embed``, torn lines, and a large file."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import media
import pytest
from click.testing import CliRunner
from PIL import Image

from framepipe.cli import cli
from framepipe.errors import OutputError
from framepipe.output import open_writer, read_records
from framepipe.records import failed_record, ok_record
from framepipe.report import THUMB_SIDE, write_report

EVIL_ANSWER = '<script>alert("x")</script> & more'
EVIL_ERROR = "bad <b>file</b>.mp4: cannot decode & \"quoted\" 'single'"
VIDEO_NAME = "clip #1 & <b>.mp4"  # needs escaping in HTML and quoting in URLs


class _Page(HTMLParser):
    """Collects the tags (with attributes) and the visible text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def attrs(self, tag: str, name: str) -> list[str]:
        return [str(a[name]) for t, a in self.tags if t == tag and a.get(name) is not None]

    def cards(self) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == "section" and "card" in str(a.get("class"))]


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def local_targets(page: _Page, html_path: Path) -> list[Path]:
    """Every image and link target of the page, as files relative to the page (links within
    the page left out)."""
    urls = page.attrs("img", "src") + [u for u in page.attrs("a", "href") if u[:1] != "#"]
    assert urls
    for u in urls:
        assert "://" not in u and not u.startswith(("/", "data:")), u
    return [html_path.parent / urllib.parse.unquote(u) for u in urls]


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``framepipe sample`` output folder: one 64x48 30-frame video cut into two clips."""
    root = tmp_path_factory.mktemp("report")
    video = media.encode_video(root / VIDEO_NAME, num_frames=30, width=64, height=48)
    out = root / "sampled"
    result = CliRunner().invoke(
        cli, ["sample", str(video), "-n", "3", "--clip-seconds", "0.5", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def caption_records(sampled: Path, dest: Path, *, random_weights: bool) -> Path:
    """Caption-like records in ``dest``, as ``caption --frames-dir`` writes them: frame paths
    relative to the JSONL's folder (here ``../sampled/...``); plus one without frames and
    a failed one."""
    dest.mkdir(parents=True, exist_ok=True)
    model = {"id": "tiny/llava", "revision": None, "random_weights": random_weights}
    recs: list[dict[str, Any]] = []
    for k, rec in enumerate(read_records(sampled / "manifest.jsonl")):
        rec = dict(rec)
        rel = lambda p: os.path.relpath(sampled / p, dest)  # noqa: E731
        rec["frames"] = [rel(p) for p in rec["frames"]]
        rec["contact_sheet"] = rel(rec["contact_sheet"])
        if k == 1:
            rec["frames"] = rec["contact_sheet"] = None  # run without --frames-dir
        rec.update(model=model, questions=["What happens?", "Colors?"])
        for field in ("key", "input_key"):  # (a model and questions make other keys)
            rec[field] = f"caption-{rec[field]}"
        rec.update(answers=[EVIL_ANSWER, f"answer {k}"], prompt="<image>x", generation={})
        recs.append(rec)
    recs.append(
        {"source": "broken.mp4", "kind": "video", "status": "failed", "error": EVIL_ERROR,
         "model": model, "questions": ["What happens?"], "answers": None, "frames": None}
    )  # fmt: skip
    path = dest / "captions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


def test_sample_manifest_report(sampled: Path, tmp_path: Path) -> None:
    html_path = tmp_path / "site" / "sub" / "report.html"
    result = CliRunner().invoke(cli, ["report", str(sampled), "-o", str(html_path)])
    assert result.exit_code == 0, result.output
    page = parse(html_path)
    recs = list(read_records(sampled / "manifest.jsonl"))
    assert len(recs) == 2 and len(page.cards()) == 2
    text = "".join(page.text)
    assert text.count(VIDEO_NAME) == 2  # the source, escaped in the file, read back as is
    assert "<b>.mp4" not in html_path.read_text(encoding="utf-8")
    for target in local_targets(page, html_path):
        assert target.is_file(), target
    srcs = page.attrs("img", "src")
    assert len(srcs) == sum(len(r["frames"]) for r in recs)
    labels = [a["alt"] for t, a in page.tags if t == "img"]
    want = [f"#{i}" for r in recs for i in r["indices"]]
    assert [str(lab).split()[0] for lab in labels] == want
    assert '<div class="banner">' not in html_path.read_text(encoding="utf-8")
    assert "http" not in html_path.read_text(encoding="utf-8")  # no CDN, no external URL


def test_a_parquet_sample_folder_killed_before_its_first_fold_is_reported(
    sampled: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "killed"
    shutil.copytree(sampled, folder)
    (folder / "manifest.jsonl").rename(folder / ".manifest.parquet.journal")  # its records
    result = CliRunner().invoke(cli, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    assert len(parse(folder / "report.html").cards()) == 2


def test_sheet_only_default_output(sampled: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(sampled), "--no-thumbnails"])
    assert result.exit_code == 0, result.output
    html_path = sampled / "report.html"
    page = parse(html_path)
    srcs = page.attrs("img", "src")
    assert len(srcs) == 2 and all(s.endswith("contact_sheet.jpg") for s in srcs)
    for target in local_targets(page, html_path):
        assert target.is_file(), target
    html_path.unlink()


def test_caption_records_escaped_and_banner(sampled: Path, tmp_path: Path) -> None:
    captions = caption_records(sampled, tmp_path / "results", random_weights=True)
    html_path = write_report([captions, sampled / "manifest.jsonl"], tmp_path / "r.html")
    raw = html_path.read_text(encoding="utf-8")
    page = parse(html_path)
    text = "".join(page.text)
    assert EVIL_ANSWER in text and EVIL_ERROR in text
    assert "<script>alert" not in raw and "<b>file" not in raw
    assert raw.count("<script>") == 1  # the page's own filter script only
    assert '<div class="banner">' in raw and "tiny/llava" in raw
    assert "3 of 5 records" in text  # random weights: the 3 caption records, not the samples
    assert "clips: 5 (4 ok, 1 failed)" in text
    failed = [c for c in page.cards() if c.get("data-status") == "failed"]
    assert len(failed) == 1
    assert f'<p class="err">{html.escape(EVIL_ERROR)}</p>' in raw  # quotes escaped too
    assert "frames (not saved)" in text  # the caption record without frames
    targets = local_targets(page, html_path)
    assert any("../" in str(t) for t in page.attrs("img", "src"))
    for target in targets:
        assert target.is_file(), target
    options = page.attrs("option", "value")
    assert {"ok", "failed", "video"} <= set(options)


def test_no_banner_for_real_weights(sampled: Path, tmp_path: Path) -> None:
    captions = caption_records(sampled, tmp_path / "results", random_weights=False)
    raw = write_report(captions, tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<div class="banner">' not in raw and 'class="rw"' not in raw
    assert "tiny/llava (3)" in raw


def test_embed_makes_data_uris(sampled: Path, tmp_path: Path) -> None:
    captions = caption_records(sampled, tmp_path / "results", random_weights=True)
    html_path = tmp_path / "mail" / "r.html"
    result = CliRunner().invoke(cli, ["report", str(captions), "-o", str(html_path), "--embed"])
    assert result.exit_code == 0, result.output
    page = parse(html_path)
    srcs = page.attrs("img", "src")
    want = sum(len(r.get("frames") or []) for r in read_records(captions))
    assert want > 0 and len(srcs) == want
    for src in srcs:
        head, _, data = src.partition(",")
        assert head == "data:image/jpeg;base64"
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        assert img.format == "JPEG" and max(img.size) <= THUMB_SIDE
    assert [u for u in page.attrs("a", "href") if u[:1] != "#"] == []  # none at files


def test_torn_last_line_tolerated(sampled: Path, tmp_path: Path) -> None:
    torn = tmp_path / "torn.jsonl"
    good = (sampled / "manifest.jsonl").read_text(encoding="utf-8")
    torn.write_text(good + good.splitlines()[0][:40], encoding="utf-8")
    html_path = write_report(torn, tmp_path / "r.html", base_dir=sampled)
    page = parse(html_path)
    assert len(page.cards()) == 2
    for target in local_targets(page, html_path):
        assert target.is_file(), target


def test_missing_records_file(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"nope\.jsonl"):
        write_report([tmp_path / "nope.jsonl"], tmp_path / "r.html")
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "nope.jsonl")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("under", ["notes.txt/r.html", "notes.txt/sub/r.html"])
def test_an_output_under_a_file_names_the_file_in_its_way(
    sampled: Path, tmp_path: Path, under: str
) -> None:
    """``-o notes.txt/r.html`` said ``cannot write (File exists)`` (or ``Not a directory``),
    naming no file in the way; ``sample`` and ``caption`` name it."""
    (tmp_path / "notes.txt").write_text("mine\n", encoding="utf-8")
    out = tmp_path / under
    result = CliRunner().invoke(cli, ["report", str(sampled), "-o", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == (
        f"Error: {out}: cannot create the report ({tmp_path / 'notes.txt'} is not a folder)"
    )
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine\n"


def test_many_records_stream_into_one_page(tmp_path: Path) -> None:
    rec = {
        "source": "v.mp4", "kind": "video", "clip": {"index": 0, "start_s": 0.0, "end_s": 1.0},
        "sampler": {"name": "uniform", "params": {"n": 8}}, "indices": list(range(8)),
        "timestamps_s": [i / 30 for i in range(8)],
        "frames": [f"v/clip_000/frame_{i:03d}.jpg" for i in range(8)],
        "questions": ["What happens?"], "answers": ["Something & nothing. " * 10],
    }  # fmt: skip
    path = tmp_path / "big.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(2_000):
            fh.write(json.dumps({**rec, "source": f"v{i}.mp4"}) + "\n")
    html_path = write_report(path, tmp_path / "big.html", page_size=0)  # 0: one page
    raw = html_path.read_text(encoding="utf-8")
    assert raw.count('<section class="card') == 2_000
    assert 'id="r2000"' in raw and "v1999.mp4" in raw


def long_output(path: Path, n: int, failed_every: int) -> Path:
    """``n`` records written by the library's writer, every ``failed_every``-th failed."""
    with open_writer(path, overwrite=True) as w:
        for i in range(n):
            src, key = f"v{i}.mp4", f"k{i}"
            if i % failed_every == 1:
                w.write(failed_record(src, f"cannot decode frame {i}\n(damaged)", key=key))
            else:
                w.write(ok_record(src, kind="video", indices=[0], answers=["a"], key=key))
    return path


def test_a_long_output_is_cut_into_pages_failed_records_first(tmp_path: Path) -> None:
    records = long_output(tmp_path / "r.jsonl", 2_500, failed_every=100)
    html_path = tmp_path / "site" / "report.html"
    result = CliRunner().invoke(cli, ["report", str(records), "-o", str(html_path)])
    assert result.exit_code == 0, result.output
    pages = [html_path, html_path.with_name("report-2.html"), html_path.with_name("report-3.html")]
    assert sorted(html_path.parent.iterdir()) == sorted(pages)
    first, *rest = (parse(p) for p in pages)
    assert [len(p.cards()) for p in (first, *rest)] == [1_000, 1_000, 500]
    statuses = [c["data-status"] for p in (first, *rest) for c in p.cards()]
    assert statuses == ["failed"] * 25 + ["ok"] * 2_475  # failed ones first
    text = "".join(first.text)
    assert "clips: 2500 (2475 ok, 25 failed) · sources: 2500" in text
    assert "cannot decode frame N (damaged)" in text and "25" in text  # one kind of error
    assert {"report-2.html", "report-3.html"} <= set(first.attrs("a", "href"))
    assert "report.html" in rest[1].attrs("a", "href")  # back to the summary
    for p in (first, *rest):  # a card is one line: an answer's line break is a reference
        assert all("\n" not in c.get("class", "") for c in p.cards())
    # a shorter report after it removes its pages that are not its own
    long_output(records, 1_500, failed_every=100)
    result = CliRunner().invoke(cli, ["report", str(records), "-o", str(html_path)])
    assert result.exit_code == 0, result.output
    assert sorted(html_path.parent.iterdir()) == sorted(pages[:2])
    result = CliRunner().invoke(
        cli, ["report", str(records), "-o", str(html_path), "--page-size", "0"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(html_path.parent.iterdir()) == [html_path]
    assert len(parse(html_path).cards()) == 1_500


def test_a_file_name_that_is_not_utf8_is_shown_escaped_and_linked(tmp_path: Path) -> None:
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/fr\xffames #?"))
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "f.jpg")
    rec = {"source": os.fsdecode(b"vids/bad\xff\xfe.mp4"), "kind": "video", "status": "ok",
           "frames": [os.path.relpath(folder / "f.jpg", tmp_path)], "indices": [0],
           "answers": [os.fsdecode(b"a\xff")], "questions": ["q"]}  # fmt: skip
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["report", str(path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = parse(tmp_path / "r.html")
    assert "vids/bad\\xff\\xfe.mp4" in "".join(page.text)
    (src,) = page.attrs("img", "src")
    assert src == "fr%FFames%20%23%3F/f.jpg"
    assert (tmp_path / os.fsdecode(urllib.parse.unquote_to_bytes(src))).is_file()


def test_an_existing_file_that_is_not_a_report_is_not_replaced(
    sampled: Path, tmp_path: Path
) -> None:
    records = tmp_path / "m.jsonl"
    shutil.copy(sampled / "manifest.jsonl", records)
    before = records.read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n", encoding="utf-8")
    for target, why in ((records, "one of the records"), (notes, "not a framepipe report")):
        result = CliRunner().invoke(cli, ["report", str(records), "-o", str(target)])
        assert result.exit_code == 1 and why in result.output, result.output
        assert "Traceback" not in result.output
    assert records.read_bytes() == before and notes.read_text(encoding="utf-8") == "my notes\n"
    html_path = tmp_path / "r.html"
    for _ in range(2):  # a report replaces a report
        result = CliRunner().invoke(cli, ["report", str(records), "-o", str(html_path)])
        assert result.exit_code == 0, result.output
    assert len(parse(html_path).cards()) == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_clip_in_several_records_files_is_shown_once(sampled: Path, tmp_path: Path) -> None:
    # two part files given one by one, as a shell glob gives them: a clip failed in the
    # first and retried ok into the second is one clip, shown with its ok record (as
    # ``merge`` keeps it), and its frames are linked from the file the record came from
    first, second = tmp_path / "part-0.jsonl", tmp_path / "sub" / "part-1.jsonl"
    second.parent.mkdir()

    def moved(rec: dict[str, Any], to: Path) -> dict[str, Any]:  # frames relative to ``to``
        rel = [os.path.relpath(sampled / p, to.parent) for p in rec["frames"]]
        return {**rec, "frames": rel, "contact_sheet": None}

    a, b = read_records(sampled / "manifest.jsonl")
    with open_writer(first) as w:
        w.write(failed_record(a["source"], "cannot decode frame 3", key=a["key"]))
        w.write(moved(b, first))
    with open_writer(second) as w:
        w.write(moved(a, second))
    html_path = write_report([first, second], tmp_path / "report.html")
    page = parse(html_path)
    assert [c["data-status"] for c in page.cards()] == ["ok", "ok"]
    for target in local_targets(page, html_path):
        assert target.is_file(), target


def test_records_moved_without_their_frames_are_reported_with_a_warning(
    sampled: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(sampled / "manifest.jsonl", moved)  # (the frame folders left behind)
    result = CliRunner().invoke(cli, ["report", str(moved)])
    assert result.exit_code == 0, result.output
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("framepipe.report")]
    assert len(warned) == 1 and "no such image" in warned[0] and str(moved) in warned[0]
    caplog.clear()
    result = CliRunner().invoke(cli, ["report", str(sampled), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert not [r for r in caplog.records if r.name.startswith("framepipe.report")]


def test_a_folder_of_part_files_moved_without_their_frames_warns_once(
    sampled: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``framepipe report parts/`` on a folder of part files moved without the frames gave
    the same warning once per part file (200 parts: 200 lines): it is one folder's frames
    that are missing, so one warning."""
    parts = tmp_path / "parts"
    parts.mkdir()
    for k, line in enumerate((sampled / "manifest.jsonl").read_text().splitlines()):
        (parts / f"part-{k}.jsonl").write_text(line + "\n")
    assert len(list(parts.glob("part-*.jsonl"))) >= 2
    result = CliRunner().invoke(cli, ["report", f"{parts}/", "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("framepipe.report")]
    assert len(warned) == 1 and "no such image" in warned[0] and str(parts) in warned[0]
