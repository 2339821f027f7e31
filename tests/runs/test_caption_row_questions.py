"""Questions from manifest rows: a row whose question the prompt refuses is that clip's
failed record; the clips batched with it, and the rest of the run, are answered."""

from __future__ import annotations

import json
from pathlib import Path

import engine_plugins
from generator_doubles import EchoGenerator

from framepipe.config import SampleConfig
from framepipe.generate import GenerationSettings
from framepipe.output import read_records
from framepipe.runs.caption import Pipeline


def test_a_row_question_with_the_image_placeholder_fails_its_clip_only(tmp_path: Path) -> None:
    vids = [engine_plugins.make_video(tmp_path / f"v{k}.mp4", 12, seed=k) for k in range(3)]
    rows = [
        {"path": str(vids[0]), "questions": ["What is shown?"]},
        {"path": str(vids[1]), "questions": ["What is in <image> here?"]},
        {"path": str(vids[2])},
    ]
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.jsonl"
    pipe = Pipeline(
        generator=EchoGenerator(),  # type: ignore[arg-type]
        settings=GenerationSettings(batch_size=3),  # all three clips in one batch
        sample=SampleConfig(n=2),
        questions=["Default?"],
        workers=0,
    )
    s = pipe.run([], out, inputs_from=manifest)
    recs = {Path(r["source"]).name: r for r in read_records(out)}
    assert set(recs) == {"v0.mp4", "v1.mp4", "v2.mp4"} and s.done == 2 and len(s.failed) == 1
    bad = recs["v1.mp4"]
    assert bad["status"] == "failed" and bad["stage"] == "generate"
    assert "<image>" in bad["error"] and "\n" not in bad["error"]
    assert recs["v0.mp4"]["status"] == "ok" and recs["v0.mp4"]["answers"][0].startswith(
        "What is shown? => "
    )
    assert recs["v2.mp4"]["status"] == "ok" and recs["v2.mp4"]["questions"] == ["Default?"]


def test_a_row_asking_the_runs_own_questions_and_a_row_asking_none_are_one_clip(
    tmp_path: Path,
) -> None:
    from framepipe.questions import default_question

    vid = engine_plugins.make_video(tmp_path / "v.mp4", 12, seed=1)
    for given, asked in ((["Default?"], ["Default?"]), (None, [default_question("video")])):
        manifest = tmp_path / "rows.jsonl"
        rows = [{"path": str(vid), "questions": asked}, {"path": "v.mp4"}]
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = tmp_path / f"r-{bool(given)}.jsonl"
        pipe = Pipeline(
            generator=EchoGenerator(),  # type: ignore[arg-type]
            sample=SampleConfig(n=2),
            questions=given,
            workers=0,
        )
        s = pipe.run([vid], out, inputs_from=manifest)  # named three ways: one clip
        recs = list(read_records(out))
        assert len(recs) == 1 and recs[0]["questions"] == asked
        assert (s.done, s.failed) == (1, [])  # read and counted once
