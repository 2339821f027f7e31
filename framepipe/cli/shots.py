"""``framepipe shots PATH...``: the shots the keyframe sampler sees, as a table or JSON."""

from __future__ import annotations

from typing import Any

import click

from framepipe.cli.common import Command, cell_text, examples
from framepipe.cli.options import KV, KV_VALUES, SOURCE_OPT, LateHelpOption, options
from framepipe.errors import FramepipeError
from framepipe.shots.detectors import DETECTORS, settings_help

# fmt: off
ROWS: list[Any] = [
    click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str)),
    ("--json", bool, None,
     "One JSON array with an object per input: source, shots, transitions.",
     {"dest": "as_json"}),
    ("--detector", DETECTORS, "builtin",
     "Shot detector: builtin (fast, CPU) or transnetv2 (pip install 'framepipe[transnet]'; "
     "CUDA when present)."),
    ("--opt", KV, None,
     "Setting of the chosen --detector, e.g. cut_ratio=3 or min_shot_s=1; one it does not "
     f"take is refused ({KV_VALUES}). Settings of {{settings}}.",
     # each detector's settings, read from the registry when the help is shown
     {"cls": LateHelpOption, "fill": lambda: {"settings": settings_help()}}),
    SOURCE_OPT,
]
# fmt: on


@click.command(
    "shots",
    cls=Command,
    epilog=examples(
        "framepipe shots movie.mp4",
        "framepipe shots videos/ --opt min_shot_s=1 --json",
    ),
)
@options(ROWS)
def command(
    paths: tuple[str, ...],
    as_json: bool,
    detector: str,
    opt: tuple[str, ...],
    source_opt: tuple[str, ...],
) -> None:
    """Detect the shots of each video: hard cuts, dissolves and fades through black.

    PATHS are video files or folders (searched recursively) or remote URIs (s3://, gs://,
    https://: downloaded to the cache first, as by sample). Each shot is printed with its
    first frame, its end frame (exclusive) and their times; each video's table as soon as
    its shots are found (--json: one array at the end). Each detector takes its own
    settings (--opt, listed below). Exit status is 1 when any input failed, after all the
    others are done; 2 for a bad setting (or one the detector does not take), refused before
    any input is opened.
    """
    from framepipe.cli.common import SettingError, parse_kv, report_per_source
    from framepipe.shots import checked_params, detect_shots

    settings = parse_kv(opt, "--opt")
    if "detector" in settings:  # one spelling: --detector
        raise SettingError("--opt detector: choose the shot detector with --detector")
    params = {"detector": detector, **settings}
    checked_params(params)  # a bad setting: refused before any input is read
    options = parse_kv(source_opt, "--source-opt")

    def describe(src: Any, name: str) -> dict[str, Any]:
        info = src.info()
        if info.num_frames == 0:
            raise FramepipeError(f"{name}: no frames")
        det = detect_shots(src, info, **params)
        ts = info.timestamps_s
        end_s = info.end_s
        shots = []
        for a, b in det.shots:
            shots.append(
                {
                    "start_frame": a,
                    "end_frame": b,
                    "start_s": None if ts is None else round(ts[a], 6),
                    "end_s": None
                    if ts is None
                    else round(ts[b] if b < len(ts) else (end_s or ts[-1]), 6),
                }
            )
        return {
            "source": name,
            "detector": det.params.detector,
            "num_frames": info.num_frames,
            "shots": shots,
            "transitions": [t.to_json() for t in det.transitions],
        }

    report_per_source(
        paths,
        kind="video",
        source_options=options,
        describe=describe,
        as_json=as_json,
        table=_table,
        table_each=True,  # each video's shots printed when found
    )


def _table(results: list[dict[str, Any]]) -> None:
    for r in results:
        if "shots" not in r:
            continue
        kinds = {t["frame"]: t["kind"] for t in r["transitions"]}
        click.echo(f"{cell_text(r['source'])}: {len(r['shots'])} shot(s)")
        rows = [["shot", "start_frame", "end_frame", "start_s", "end_s", "begins_with"]]
        for k, s in enumerate(r["shots"]):
            rows.append(
                [
                    str(k),
                    str(s["start_frame"]),
                    str(s["end_frame"]),
                    "-" if s["start_s"] is None else f"{s['start_s']:.3f}",
                    "-" if s["end_s"] is None else f"{s['end_s']:.3f}",
                    kinds.get(s["start_frame"], "start" if k == 0 else "-"),
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            click.echo("  " + "  ".join(v.rjust(w) for v, w in zip(row, widths)).rstrip())
