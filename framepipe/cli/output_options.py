"""The records-output options that ``sample``, ``caption`` and ``merge`` share: the output path
(a file, or a folder of part files), its format and whether failed clips are retried."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from framepipe.output import FORMATS, is_folder_output


class OutputPath(click.Path):
    """A records file (not a folder), or a folder of part files: a path ending with ``/``, or
    a folder that holds part files already."""

    name = "output"

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=str)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and is_folder_output(value):
            return value
        return super().convert(value, param, ctx)


def format_option(
    *names: str, what: str = "records", default: str = "from the file's suffix, else jsonl"
) -> Callable[[Any], Any]:
    """``--format jsonl|parquet`` (under ``names``), None by default (``default`` says what
    that means)."""
    return click.option(
        *(names or ("--format",)),
        "records_format",
        type=click.Choice(FORMATS),
        default=None,
        help=f"Format of the {what}: jsonl or parquet (needs pyarrow).  [default: {default}]",
    )


retry_option = click.option(
    "--retry-failed/--no-retry-failed",
    default=True,
    show_default=True,
    help="Try failed clips again on a re-run (their new records replace the old ones); "
    "with --no-retry-failed a failed record counts as done and is kept.",
)
