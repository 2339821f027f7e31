"""``framepipe caption PATH... -n N -q QUESTION -o results.jsonl``: answer questions about
every clip with a multi-image vision-language model."""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from framepipe.cli.common import Command, SettingError, examples, field_default, note
from framepipe.cli.options import FORMAT, RETRY, OutputPath, Row, Unset, options
from framepipe.cli.progress import run_with_progress
from framepipe.cli.run_options import GENERATE_ACTORS, RUN, decode_timeout, run_arguments
from framepipe.errors import FramepipeError
from framepipe.generate.backend import BACKENDS
from framepipe.generate.config import (
    ATTN,
    DEFAULT_MODEL,
    DTYPES,
    QUANTIZE,
    GenerationSettings,
    ModelConfig,
)

# fmt: off
MODEL: list[Row] = [
    ("-q --question", str, Unset("a description request suited to the input's kind"),
     "A question about every clip (repeatable: all are answered from one encoding of the "
     "frames).", {"dest": "questions", "multiple": True}),
    ("--questions-file", click.Path(dir_okay=False, path_type=str), None,
     "A text file with one question per line (added after any -q)."),
    ("--system", str, None, "A system prompt."),
    ("-m --model", str, Unset(DEFAULT_MODEL), "Hub id or local folder of a LLaVA-style model."),
    ("--revision", str, None, "Hub revision (branch, tag or commit)."),
    ("--device", str, field_default(ModelConfig, "device"),
     "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    ("--dtype", DTYPES, field_default(ModelConfig, "dtype"),
     "auto: bfloat16 where the device has it, else float16 (GPU) or float32 (CPU)."),
    ("--quantize", QUANTIZE, None, "Load the weights quantized with bitsandbytes (CUDA only)."),
    ("--attn", ATTN, field_default(ModelConfig, "attn"),
     "Attention implementation (auto: FlashAttention 2 when usable, else SDPA)."),
    ("--trust-remote-code", bool, None, "Allow the model repository's own Python code to run."),
    ("--offline", bool, None,
     "Never contact the hub; use the local cache only (also: HF_HUB_OFFLINE=1)."),
]
OPENAI = "--backend openai: "
BACKEND: list[Row] = [
    ("--backend", BACKENDS, "transformers",
     "Where answers are made: transformers (the model in this process) or openai (an "
     "OpenAI-compatible server: vLLM, SGLang, TGI, transformers serve; --model then names the "
     "server's model, by default its only one)."),
    ("--base-url", str, None, OPENAI + "the server's API root, http://HOST:PORT/v1."),
    ("--api-key", str, Unset("OPENAI_API_KEY"), OPENAI + "its API key."),
    ("--max-concurrency", click.IntRange(min=1), 8, OPENAI + "requests in flight at once."),
    ("--request-timeout", click.FloatRange(min=0, min_open=True), 600.0,
     OPENAI + "seconds a request may wait for its answer (then tried once more, then its "
     "clip fails)."),
    ("--server-wait", click.FloatRange(min=0), 300.0,
     OPENAI + "seconds a server that refuses every connection mid-run is waited for (then "
     "the run stops; the same command resumes)."),
]
# fmt: on

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
    "seed": (
        int,
        "Random seed for sampling (with --do-sample): each answer draws from its own "
        "stream, seeded from it, the clip and the question.",
    ),
}

# fmt: off
ROWS: list[Row] = [
    ("-o --output", OutputPath(), None,
     "Records file (.jsonl or .parquet), one record per clip (a re-run completes it and "
     "replaces retried clips' records); a path ending with / is a folder of part files.",
     {"required": True}),
    FORMAT,
    RETRY,
    ("--frames-dir", click.Path(file_okay=False, path_type=str), None,
     "Also save each clip's frames and contact sheet under this folder."),
    ("--overwrite", bool, None, "Start afresh instead of skipping answered clips."),
]
LOCAL: list[Row] = [
    ("--workers", click.IntRange(min=0), Unset("2, 1 on one core"),
     "Decoding processes (0: decode in the main process)."),
    ("--prefetch", click.IntRange(min=1), Unset("the larger of 2 x workers and the batch size"),
     "Decoded clips kept ready ahead of the model."),
    decode_timeout("Seconds one input may take to open, or one clip to decode, before its "
                   "decoder is stopped (that clip or input failed; the run goes on)."),
]
# fmt: on
GENERATION_ROWS: list[Row] = [
    ("--do-sample", bool, None, "Sample instead of greedy decoding."),
    *(
        (f"--{name.replace('_', '-')}", typ, Unset(field_default(GenerationSettings, name)), text)
        for name, (typ, text) in GENERATION_OPTIONS.items()
    ),
]


def model_config_from(kw: dict[str, Any]) -> ModelConfig:
    """Build the :class:`ModelConfig` from the parsed model options (popped from ``kw``):
    each option is named after its field, and ``--offline`` sets ``local_files_only``."""
    values = {f.name: kw.pop(f.name) for f in fields(ModelConfig) if f.name in kw}
    values["model"] = values.get("model") or DEFAULT_MODEL
    if kw.pop("offline"):
        values["local_files_only"] = True
    return ModelConfig(**values)


def backend_from(kw: dict[str, Any], model: str | None, settings: GenerationSettings) -> Any:
    """The generation backend the options name (popped from ``kw``); None for the model in
    this process."""
    name, url = kw.pop("backend"), kw.pop("base_url")
    key, concurrency = kw.pop("api_key"), kw.pop("max_concurrency")
    timeout, wait = kw.pop("request_timeout"), kw.pop("server_wait")
    if name == "transformers":
        return None  # the server's options were refused with it (see run_options.APPLIES)
    if not url:
        raise SettingError(f"--backend {name} needs --base-url (e.g. http://host:8000/v1)")
    try:
        return BACKENDS.get(name)(
            url,
            model,
            settings,
            api_key=key,
            max_concurrency=concurrency,
            timeout_s=timeout,
            wait_s=wait,
        )
    except FramepipeError as exc:
        raise SettingError(str(exc)) from None


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


@click.command(
    "caption",
    cls=Command,
    epilog=examples(
        'framepipe caption videos/ -n 8 -q "What happens in this video?" -o results.jsonl',
        'framepipe caption scenes/ -n 12 --sampler nview -q "List the objects." -o scenes.jsonl',
        "framepipe caption videos/ -o results.jsonl --model MODEL_DIR --frames-dir frames/",
        "framepipe caption videos/ -o results.jsonl --backend openai --base-url http://HOST:8000/v1",
    ),
)
@options(ROWS, MODEL, BACKEND, GENERATION_ROWS, RUN, LOCAL, GENERATE_ACTORS)
def command(paths: tuple[str, ...], output: str, **kw: Any) -> None:
    """Ask a vision-language model about n frames of every clip; one JSON line per clip.

    PATHS are videos, multi-view scene folders, 3D models, or folders of them (searched
    recursively), or remote URIs (s3://, gs://, https://); --inputs-from reads them from a
    manifest (a row's questions replace -q for it). A re-run with the same settings answers
    only the clips not in the output yet. Exit status is 1 when any clip failed, after all
    the others are done; 2 for a bad setting, refused before any work (no model loaded).
    """
    from framepipe.questions import check_questions, check_system
    from framepipe.runs.caption import caption

    gen = {k: v for k in GENERATION_OPTIONS if (v := kw.pop(k)) is not None}
    settings = GenerationSettings(do_sample=kw.pop("do_sample"), **gen)
    cfg, run_kw = run_arguments(paths, kw)
    qs = list(kw.pop("questions"))
    questions_file = kw.pop("questions_file")
    if questions_file:
        qs += read_questions_file(questions_file)
    model_id = kw.get("model")
    model = model_config_from(kw)
    check_questions(qs or None)  # bad text is a usage error, before anything runs
    check_system(kw["system"])
    backend = backend_from(kw, model_id, settings)
    model_kw = {"backend": backend} if backend else {"model": model, "settings": settings}
    summary = run_with_progress(
        caption,
        cfg,
        output,
        "answer the rest",
        paths=paths,
        sample=cfg,
        output=output,
        **model_kw,
        questions=qs or None,
        **kw,
        **run_kw,
    )
    rate = f"{summary.clips_per_s:.2f} clips/s" if summary.done else "no clip answered"
    loaded = summary.load_s > summary.check_s
    load = "model check and loading" if loaded else "model check, no weights loaded:"
    note(
        f"{summary.done} clip(s) answered, {summary.skipped} already done, "
        f"{len(summary.failed)} failed -> {output} in {summary.elapsed_s:.1f} s "
        f"({load} {summary.load_s:.1f} s; {rate}; decoding "
        f"{summary.decode_s:.1f} s in workers, generating {summary.generate_s:.1f} s)"
    )
    if summary.model and summary.model.get("random_weights"):
        note("note: the model has random weights; its answers are not captions")
    if summary.failed:
        sys.exit(1)
