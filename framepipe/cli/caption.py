"""``framepipe caption PATH... -n N -q QUESTION -o results.jsonl``: answer questions about
every clip with a multi-image vision-language model."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from framepipe.cli.common import field_default, sample_config_from, unset_option
from framepipe.cli.engine_options import decode_timeout_option, ray_options_from, run_options
from framepipe.cli.inputs import input_count, input_kwargs
from framepipe.cli.output_options import OutputPath, format_option, retry_option
from framepipe.discover import Input, Skipped
from framepipe.errors import FramepipeError
from framepipe.generate.config import (
    ATTN,
    DEFAULT_MODEL,
    DTYPES,
    QUANTIZE,
    GenerationSettings,
    ModelConfig,
)
from framepipe.types import ClipResult

# Generation options: name -> (click type, help). The default shown in --help is
# GenerationSettings' own; options left unset are not passed, so the library's defaults apply.
GENERATION_OPTIONS: dict[str, tuple[Any, str]] = {
    "batch_size": (int, "Clips answered together (halved on CUDA out-of-memory)."),
    "max_new_tokens": (int, "Most new tokens per answer."),
    "temperature": (float, "Sampling temperature (with --do-sample)."),
    "top_p": (float, "Nucleus sampling probability mass (with --do-sample)."),
    "top_k": (int, "Sample among the k most likely tokens (with --do-sample)."),
    "num_beams": (int, "Beam search width (1: greedy or sampling)."),
    "repetition_penalty": (float, "Penalty for repeated tokens (1: none)."),
    "seed": (int, "Random seed for sampling."),
}


def _generation_options(fn: Any) -> Any:
    for name, (typ, text) in reversed(GENERATION_OPTIONS.items()):
        flag = "--" + name.replace("_", "-")
        default = str(field_default(GenerationSettings, name))
        fn = unset_option(flag, name, type=typ, text=text, default=default)(fn)
    return fn


def _model_option(name: str, choices: Sequence[str] | None, text: str) -> Any:
    """``--NAME``, defaulting (shown in --help) to ModelConfig's own ``NAME``."""
    typ = None if choices is None else click.Choice(choices)
    default = field_default(ModelConfig, name)
    return click.option("--" + name, type=typ, default=default, show_default=True, help=text)


def model_config_from(kw: dict[str, Any]) -> ModelConfig:
    """Build the :class:`ModelConfig` from the parsed model options (popped from ``kw``):
    each option is named after its field, and ``--offline`` sets ``local_files_only``."""
    values = {f.name: kw.pop(f.name) for f in fields(ModelConfig) if f.name in kw}
    values["model"] = values.get("model") or DEFAULT_MODEL
    if kw.pop("offline"):
        values["local_files_only"] = True
    return ModelConfig(**values)


# -- generation backend: --backend, --base-url, --api-key, --max-concurrency -------------------
def _backend_options(fn: Any) -> Any:
    from framepipe.generate.backend import BACKENDS

    openai = "--backend openai: "
    for option in reversed(
        [
            click.option(
                "--backend",
                type=click.Choice(BACKENDS.names()),
                default="transformers",
                show_default=True,
                help="Where answers are made: transformers (the model in this process) or "
                "openai (an OpenAI-compatible server: vLLM, SGLang, TGI, transformers serve; "
                "--model then names the server's model, by default its only one).",
            ),
            click.option("--base-url", help=openai + "the server's API root, http://HOST:PORT/v1."),
            click.option("--api-key", help=openai + "its API key. [default: OPENAI_API_KEY]"),
            click.option(
                "--max-concurrency",
                type=click.IntRange(min=1),
                default=8,
                show_default=True,
                help=openai + "requests in flight at once.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def backend_from(kw: dict[str, Any], model: str | None, settings: GenerationSettings) -> Any:
    """The generation backend the options name (popped from ``kw``); None for the model in
    this process."""
    from framepipe.generate.backend import BACKENDS

    name, url = kw.pop("backend"), kw.pop("base_url")
    key, concurrency = kw.pop("api_key"), kw.pop("max_concurrency")
    if name == "transformers":
        if url:
            raise click.UsageError("--base-url is for --backend openai")
        return None
    if not url:
        raise click.UsageError(f"--backend {name} needs --base-url (e.g. http://host:8000/v1)")
    try:
        return BACKENDS.get(name)(url, model, settings, api_key=key, max_concurrency=concurrency)
    except FramepipeError as exc:
        raise click.UsageError(str(exc)) from exc


def read_questions_file(path: str) -> list[str]:
    """One question per line; blank lines and lines starting with ``#`` are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(
            f"{path}: cannot read ({exc.strerror or exc})", param_hint="--questions-file"
        ) from exc
    qs = [ln.strip() for ln in text.splitlines()]
    qs = [q for q in qs if q and not q.startswith("#")]
    if not qs:
        raise click.BadParameter(f"{path}: holds no question", param_hint="--questions-file")
    return qs


@click.command("caption")
@run_options(generate=True)
@click.option(
    "-q",
    "--question",
    "questions",
    multiple=True,
    help="A question about every clip (repeatable: all are answered from one encoding of the "
    "frames). [default: a description request suited to the input's kind]",
)
@click.option(
    "--questions-file",
    type=click.Path(dir_okay=False, path_type=str),
    help="A text file with one question per line (added after any -q).",
)
@click.option("--system", default=None, help="A system prompt.")
@click.option(
    "-m",
    "--model",
    default=None,
    help=f"Hub id or local folder of a LLaVA-style model. [default: {DEFAULT_MODEL}]",
)
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@_model_option("device", None, "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")
@_model_option(
    "dtype", DTYPES, "auto: bfloat16 where the device has it, else float16 (GPU) or float32 (CPU)."
)
@click.option(
    "--quantize",
    type=click.Choice(QUANTIZE),
    default=None,
    help="Load the weights quantized with bitsandbytes (CUDA only).",
)
@_model_option(
    "attn", ATTN, "Attention implementation (auto: FlashAttention 2 when usable, else SDPA)."
)
@click.option(
    "--trust-remote-code",
    is_flag=True,
    help="Allow the model repository's own Python code to run.",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Never contact the hub; use the local cache only (also: HF_HUB_OFFLINE=1).",
)
@_backend_options
@click.option("--do-sample", is_flag=True, help="Sample instead of greedy decoding.")
@_generation_options
@click.option(
    "-o",
    "--output",
    default="results.jsonl",
    show_default=True,
    type=OutputPath(),
    help="Records file (.jsonl or .parquet), one record per clip (a re-run completes it and "
    "replaces retried clips' records); a path ending with / is a folder of part files.",
)
@format_option()
@retry_option
@click.option(
    "--frames-dir",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Also save each clip's frames and contact sheet under this folder.",
)
@click.option("--overwrite", is_flag=True, help="Start afresh instead of skipping answered clips.")
@unset_option(
    "--workers",
    type=click.IntRange(min=0),
    text="Decoding processes (0: decode in the main process).",
    default="2, 1 on one core",
)
@unset_option(
    "--prefetch",
    type=click.IntRange(min=1),
    text="Decoded clips kept ready ahead of the model.",
    default="the larger of 2 x workers and the batch size",
)
@decode_timeout_option(
    "Seconds one clip may take to decode before its decoder is stopped (clip failed)."
)
def command(
    paths: tuple[str, ...],
    questions: tuple[str, ...],
    questions_file: str | None,
    system: str | None,
    do_sample: bool,
    output: str,
    records_format: str | None,
    retry_failed: bool,
    frames_dir: str | None,
    overwrite: bool,
    workers: int | None,
    prefetch: int | None,
    decode_timeout: float,
    **kw: Any,
) -> None:
    """Ask a vision-language model about n frames of every clip; one JSON line per clip.

    PATHS are videos, multi-view scene folders, 3D models, or folders of them (searched
    recursively), or remote URIs (s3://, gs://, https://); --inputs-from reads them from a
    manifest (a row's questions replace -q for it). A re-run with the same settings answers
    only the clips not in the output yet. Exit status is 1 when any clip failed, after all
    the others are done.
    """
    from framepipe.questions import check_questions, check_system
    from framepipe.runs.caption import caption

    gen_kw = {k: kw.pop(k) for k in GENERATION_OPTIONS}
    engine_kw = ray_options_from(kw)  # --engine ...
    try:
        cfg = sample_config_from(kw)
    except FramepipeError as exc:
        raise click.UsageError(str(exc)) from exc
    inputs_kw = input_kwargs(paths, kw, cfg)  # manifests, remote inputs, --shard
    qs = list(questions)
    if questions_file:
        qs += read_questions_file(questions_file)

    model_id = kw.get("model")
    try:
        model_cfg = model_config_from(kw)
        settings = GenerationSettings(
            do_sample=do_sample, **{k: v for k, v in gen_kw.items() if v is not None}
        )
        check_questions(qs or None)  # bad text is a usage error, before anything runs
        check_system(system)
    except FramepipeError as exc:
        raise click.UsageError(str(exc)) from exc

    backend = backend_from(kw, model_id, settings)
    model_kw = {"backend": backend} if backend else {"model": model_cfg, "settings": settings}
    progress = _Progress(whole=cfg.clips == "whole" and cfg.clip_seconds is None)
    try:
        summary = caption(
            paths,
            sample=cfg,
            **model_kw,
            questions=qs or None,
            system=system,
            output=output,
            frames_dir=frames_dir,
            overwrite=overwrite,
            format=records_format,
            retry_failed=retry_failed,
            workers=workers,
            prefetch=prefetch,
            decode_timeout_s=decode_timeout,
            keep_records=False,
            on_input=progress.on_input,
            **inputs_kw,
            **engine_kw,
            on_record=progress.on_record,
            on_skip=progress.on_skip,
        )
    except KeyboardInterrupt:
        progress.close()
        click.echo(
            f"interrupted: {progress.written} clip(s) written to {output}; run the same "
            "command again to answer the rest",
            err=True,
        )
        sys.exit(130)
    except FramepipeError as exc:
        progress.close()
        raise click.ClickException(str(exc)) from exc
    progress.close()
    rate = f"{summary.clips_per_s:.2f} clips/s" if summary.done else "no clip answered"
    click.echo(
        f"{summary.done} clip(s) answered, {summary.skipped} already done, "
        f"{len(summary.failed)} failed -> {output} in {summary.elapsed_s:.1f} s "
        f"(model loading {summary.load_s:.1f} s; {rate}; decoding {summary.decode_s:.1f} s "
        f"in workers, generating {summary.generate_s:.1f} s)",
        err=True,
    )
    if summary.model and summary.model.get("random_weights"):
        click.echo("note: the model has random weights; its answers are not captions", err=True)
    if summary.failed:
        sys.exit(1)


class _Progress:
    """A tqdm bar of clips with clips/s and ETA (a total only when there is one clip per
    input). It appears with the first clip, so model loading does not count in the rate."""

    def __init__(self, *, whole: bool) -> None:
        self.whole = whole
        self.total: int | None = None
        self.bar: Any = None
        self.written = 0
        self.failed = 0

    def on_input(self, inputs: Sequence[Input] | Iterator[Input], notes: Sequence[Skipped]) -> None:
        from tqdm import tqdm

        for note in notes:
            tqdm.write(f"note: skipping {note.path}: {note.reason}", file=sys.stderr)
        self.total = input_count(inputs) if self.whole else None  # None for a manifest

    def _ensure(self) -> Any:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                unit="clip",
                desc="caption",
                file=sys.stderr,
                disable=None,
                dynamic_ncols=True,
            )
        return self.bar

    def on_skip(self, count: int) -> None:
        bar = self._ensure()
        if bar.total is not None:
            bar.total = max(bar.n, bar.total - count)
            bar.refresh()

    def on_record(self, rec: ClipResult) -> None:
        bar = self._ensure()
        self.written += 1
        if rec.status != "ok":
            self.failed += 1
            bar.set_postfix_str(f"{self.failed} failed", refresh=False)
        bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
