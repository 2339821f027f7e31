"""``caption``: ask a multi-image vision-language model about every clip, one record each.

The Python API behind ``framepipe caption``::

    from framepipe import SampleConfig, caption
    summary = caption(["videos/"], sample=SampleConfig(n=8), questions=["What happens?"],
                      output="results.jsonl")
    for rec in summary.records:
        print(rec.source, rec.answers)

:class:`Pipeline` keeps the model loaded between runs. Frames are decoded by the local
engine's worker processes, ``prefetch`` clips ahead, while this process answers the current
batch. Everything that can be checked without loading weights (questions, output path,
model config, whether n frames fit the context window) is checked before the model loads.
The run is the shared skeleton (:mod:`framepipe.runs.common`) with the answering between the
engine and the writer. :func:`caption` is the one place a :class:`Pipeline` is made from the
options; ``framepipe caption`` calls it too.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framepipe.config import SampleConfig
from framepipe.discover import Input
from framepipe.engine.answer import RANDOM_WEIGHTS_NOTE, Answerer  # noqa: F401 - re-exported
from framepipe.engine.local import (
    DEFAULT_DECODE_TIMEOUT_S,
    EngineTask,
    LocalEngine,
    default_workers,
)
from framepipe.engine.ray import RayOptions, start_engine
from framepipe.inputs import Shard, peek_kinds
from framepipe.output import open_writer, record_files, writer_target
from framepipe.questions import check_questions, check_system, default_question
from framepipe.records import derive, local_weights_fingerprint
from framepipe.runs.common import (
    OnInput,
    OnRecord,
    Recorder,
    RunSummary,
    accounted,
    check_output,
    check_writable,
    discard_if_empty,
    find_inputs,
    save_clip_images,
)
from framepipe.stages import ClipJob
from framepipe.types import ClipResult

if TYPE_CHECKING:
    from typing import TypedDict

    from typing_extensions import Unpack

    from framepipe.generate import GenerationSettings, Generator, ModelConfig, ModelSpec

    class CaptionOptions(TypedDict, total=False):
        """The keywords of :func:`caption`: those of :class:`Pipeline`, then of its ``run``."""

        model: ModelConfig | str | None
        settings: GenerationSettings | None
        sample: SampleConfig | None
        questions: Sequence[str] | str | None
        system: str | None
        workers: int | None
        prefetch: int | None
        decode_timeout_s: float | None
        frames_dir: str | Path | None
        generator: Generator | None
        engine: str
        ray_options: RayOptions | None
        overwrite: bool
        format: str | None
        retry_failed: bool
        part: str | None
        keep_records: bool
        on_input: OnInput | None
        on_record: OnRecord | None
        on_skip: Callable[[int], None] | None
        inputs_from: str | Path | Iterable[str | Path] | None
        cache_dir: str | Path | None
        shard: Shard | str | tuple[int, int] | None


log = logging.getLogger(__name__)


@dataclass
class CaptionSummary(RunSummary):
    """What a caption run did: ``done``, ``skipped``, ``failed`` (source, error) pairs, the
    ``records`` written (in the order they were written), and totals of the stage times."""

    model: dict[str, Any] | None = None
    """The loaded model, as written on every record."""
    output: Path | None = None
    decode_s: float = 0.0
    """Sum of the clips' decode times (spent in worker processes, overlapping generation)."""
    generate_s: float = 0.0
    """Sum of the batches' generation times."""
    load_s: float = 0.0
    """Time spent checking and loading the model (part of ``elapsed_s``)."""

    def add(self, rec: ClipResult, *, keep: bool = True) -> None:
        """Count one written record, and its decode time in ``decode_s``."""
        super().add(rec, keep=keep)
        self.decode_s += float(rec.timings_s.get("decode_s", 0.0))

    @property
    def clips_per_s(self) -> float:
        """Clips answered per second of wall time once the model was loaded (skipped clips
        not counted)."""
        t = self.elapsed_s - self.load_s
        return self.done / t if t > 0 else 0.0


class Pipeline:
    """Sample, decode and answer clips; the model is loaded on first use and kept.

    ``questions`` are asked about every clip (all in one prompt pass: the frames are encoded
    once); without them each input gets the default question of its kind. ``generator``
    lets you pass an already loaded :class:`~framepipe.generate.Generator`.
    """

    def __init__(
        self,
        model: ModelConfig | str | None = None,
        settings: GenerationSettings | None = None,
        *,
        sample: SampleConfig | None = None,
        questions: Sequence[str] | str | None = None,
        system: str | None = None,
        workers: int | None = None,
        prefetch: int | None = None,
        decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
        frames_dir: str | Path | None = None,
        generator: Generator | None = None,
        engine: str = "local",
        ray_options: RayOptions | None = None,
    ) -> None:
        self.questions = check_questions(questions)
        self.system = check_system(system)
        self.sample = sample or SampleConfig()
        self._model_arg = model
        self._settings_arg = settings
        self.workers = workers
        self.prefetch = prefetch
        self.decode_timeout_s = decode_timeout_s
        self.frames_dir = None if frames_dir is None else Path(frames_dir)
        self._generator = generator
        self._spec: ModelSpec | None = getattr(generator, "spec", None)
        self.engine = engine
        """``local`` (decoding worker processes, the model here) or ``ray`` (Ray Data: read
        and generation actors, see :mod:`framepipe.engine.ray`; ``ray_options``)."""
        self.ray_options = ray_options

    # -- model ------------------------------------------------------------------------------
    @functools.cached_property
    def model_config(self) -> ModelConfig:
        from framepipe.generate import ModelConfig

        m = self._model_arg
        if m is None:
            return ModelConfig()
        if isinstance(m, (str, os.PathLike)):
            return ModelConfig(model=str(m))
        return m

    @functools.cached_property
    def settings(self) -> GenerationSettings:
        """The generation settings: given, else those of a given generator, else defaults.
        Their ``batch_size`` is how many clips go to the generator at once."""
        if self._settings_arg is not None:
            return self._settings_arg
        given = getattr(self._generator, "settings", None)
        if given is not None:
            return given
        from framepipe.generate import GenerationSettings

        return GenerationSettings()

    def questions_for(self, kind: str | None) -> list[str]:
        """The questions asked about a clip of ``kind``."""
        return list(self.questions) if self.questions else [default_question(kind)]

    def check(self, kinds: Iterable[str | None] = ("video",)) -> None:
        """Read the model's config (no weights) and check that n frames and the questions
        fit its context window; raises ModelLoadError, ConfigError or PromptError."""
        if self._spec is None and self._generator is None:
            from framepipe.generate import ModelSpec

            self._spec = ModelSpec.inspect(self.model_config)
        if self._spec is None:
            return
        seen: set[tuple[str, ...]] = set()
        for kind in kinds:
            qs = tuple(self.questions_for(kind))
            if qs not in seen:
                seen.add(qs)
                self._spec.check_fits(
                    self.sample.n,
                    list(qs),
                    system=self.system,
                    max_new_tokens=int(self.settings.max_new_tokens),
                )

    def load(self) -> Generator:
        """The generator, loaded once (after :meth:`check`)."""
        if self._generator is None:
            from framepipe.generate import Generator

            if self._spec is None:
                self.check()
            self._generator = Generator.load(self.model_config, self.settings, spec=self._spec)
        return self._generator

    # -- running ------------------------------------------------------------------------------
    def run(
        self,
        paths: Iterable[str | Path],
        output: str | Path | None = "results.jsonl",
        *,
        overwrite: bool = False,
        format: str | None = None,
        retry_failed: bool = True,
        part: str | None = None,
        keep_records: bool = True,
        on_input: OnInput | None = None,
        on_record: OnRecord | None = None,
        on_skip: Callable[[int], None] | None = None,
        inputs_from: str | Path | Iterable[str | Path] | None = None,
        cache_dir: str | Path | None = None,
        shard: Shard | str | tuple[int, int] | None = None,
    ) -> CaptionSummary:
        """Answer every clip of every input under ``paths``.

        With ``output`` (a JSONL or, ``format="parquet"`` or by its suffix, a Parquet file;
        a folder, or a path ending with ``/``, gets the part file ``part-<part>.<format>``:
        see :func:`framepipe.output.open_writer`), records are appended as they finish and a
        re-run with the same settings skips the clips already answered (``retry_failed=False``:
        failed ones too); its records replace the old ones of the same clips, so the output
        holds one record per clip (``overwrite`` starts afresh); with ``output=None``
        nothing is written and the records are only returned.
        Failed clips are records with ``status: failed``; the run goes on. ``paths`` may
        hold remote URIs and ``Input`` objects; ``inputs_from`` names manifests (streamed;
        a row's questions replace ``questions`` for it); remote inputs are staged under
        ``cache_dir``; ``shard="I/N"`` runs only that shard of the inputs.
        """
        t0 = time.perf_counter()
        ray_options = start_engine(self.engine, self.ray_options)  # Ray joined or started
        out = None if output is None else Path(output)
        target = None if output is None else writer_target(output, format, part)
        if output is not None:
            check_output(output)
        if self.frames_dir is not None:
            check_writable(self.frames_dir / ".framepipe-check", "frames folder")
        inputs, notes = find_inputs(
            paths,
            kind=self.sample.kind,
            on_input=on_input,
            inputs_from=inputs_from,
            cache_dir=cache_dir,
            shard=shard,
        )
        summary = CaptionSummary(notes=list(notes), output=out)
        kinds, inputs = peek_kinds(inputs)
        if not kinds:
            log.warning("no inputs found: nothing to do")
            summary.elapsed_s = time.perf_counter() - t0
            return summary

        t_load = time.perf_counter()
        self.check(kinds)
        key_model = self._model_key()
        gen_json = dict(self.settings.to_json())
        key_gen = {k: v for k, v in gen_json.items() if k != "batch_size"}

        def extra_key(item: Input) -> dict[str, Any]:
            return {
                "model": key_model,
                "questions": list(item.questions or self.questions_for(item.kind)),
                "system": self.system,
                "generation": key_gen,
            }

        tasks = (EngineTask(item, extra_key(item)) for item in inputs)  # lazily: may stream
        prepare = None
        if self.frames_dir is not None:
            prepare = functools.partial(
                _save_frames,
                frames_dir=self.frames_dir.resolve(),
                rel_to=None if target is None else target.resolve().parent,
            )
        if ray_options is not None:
            from framepipe.runs.on_ray import RayOutput, caption_on_ray

            ray_out = RayOutput(out, overwrite, format, retry_failed, part, keep_records, on_record)
            return caption_on_ray(
                self,
                ray_options,
                tasks,
                ray_out,
                summary,
                prepare=prepare,
                gen_json=gen_json,
                t0=t0,
                on_skip=on_skip,
            )
        # Resuming: the records already there (a torn last line is cut off). Overwriting
        # truncates the file only once the model has loaded.
        created = target is not None and not record_files(target)
        writer = None
        if output is not None and not overwrite:
            writer = open_writer(output, format, part=part, retry_failed=retry_failed)
        workers = default_workers() if self.workers is None else self.workers
        batch_size = max(1, int(getattr(self.settings, "batch_size", 1) or 1))
        engine = LocalEngine(
            self.sample,
            workers=workers,
            # a whole next batch decoded while the model answers this one
            prefetch=self.prefetch if self.prefetch is not None else max(2 * workers, batch_size),
            decode_timeout_s=self.decode_timeout_s,
            done_keys=writer.done_keys if writer is not None else (),
            prepare=prepare,
            on_skip=on_skip,
        )
        try:
            with accounted(summary, engine, t0):
                engine.start(tasks)  # the workers decode the first clips while the model loads
                gen = self.load()
                summary.load_s = time.perf_counter() - t_load
                summary.model = model_info = dict(gen.describe())
                if output is not None and writer is None:
                    writer = open_writer(
                        output, format, part=part, overwrite=True, retry_failed=retry_failed
                    )
                record = Recorder(summary, writer, keep=keep_records, on_record=on_record)
                self._answer_all(engine, gen, record, summary, model_info, gen_json)
        except BaseException:
            if writer is not None and created:
                discard_if_empty(writer)  # e.g. the weights failed to load
            raise
        finally:
            if writer is not None:
                writer.close()
        return summary

    def _model_key(self) -> dict[str, Any]:
        """What identifies the model's answers in resume keys (id, revision or path, dtype,
        quantization), known before the weights load."""
        names = ("id", "revision", "path", "dtype", "quantize")
        if self._generator is not None:
            info = dict(self._generator.describe())
        else:
            from framepipe.generate import resolve_runtime

            assert self._spec is not None
            rt = resolve_runtime(self.model_config)
            info = {**self._spec.describe(), "dtype": rt.dtype_name, "quantize": rt.quantize}
        key = {k: info.get(k) for k in names}
        path = info.get("path")
        if path and not info.get("revision"):
            key["weights"] = local_weights_fingerprint(Path(str(path)))
        return key

    def _answer_all(
        self,
        engine: LocalEngine,
        gen: Generator,
        record: Recorder,
        summary: CaptionSummary,
        model_info: dict[str, Any],
        gen_json: dict[str, Any],
    ) -> None:
        """Answer the engine's clips in batches; each clip's final record goes to ``record``."""
        answerer = Answerer(self.questions, self.system, model_info, gen_json)
        if answerer.random_weights:
            log.warning("%s has random weights: its answers are not captions", model_info.get("id"))
        batch_size = max(1, int(getattr(self.settings, "batch_size", 1) or 1))

        def answer(jobs: list[ClipJob]) -> None:
            t = time.perf_counter()
            for rec in answerer.answer(gen, jobs):
                record(rec)
            summary.generate_s += time.perf_counter() - t

        pending: list[ClipJob] = []
        for job in engine.results():
            if not job.ok:
                record(answerer.passthrough(job.record))
                continue
            pending.append(job)
            if len(pending) >= batch_size:
                answer(pending)
                pending = []
        if pending:
            answer(pending)


def _save_frames(job: ClipJob, *, frames_dir: Path, rel_to: Path | None) -> ClipResult:
    """Worker-side: write the clip's frames and contact sheet; the record with their paths,
    relative to the output (absolute without one)."""
    frames, sheet = save_clip_images(job, frames_dir)

    def rel(p: str) -> str:
        full = frames_dir / p
        return os.path.relpath(full, rel_to) if rel_to is not None else str(full)

    return derive(job.record, frames=[rel(p) for p in frames], contact_sheet=sheet and rel(sheet))


def caption(
    paths: Iterable[str | Path],
    output: str | Path | None = "results.jsonl",
    **options: Unpack[CaptionOptions],
) -> CaptionSummary:
    """Answer questions about every clip under ``paths`` into ``output``: a :class:`Pipeline`
    made from its ``options`` (``model``, ``settings``, ``sample``, ``questions``,
    ``system``, ``workers``, ``prefetch``, ``decode_timeout_s``, ``frames_dir``), run once
    with those of :meth:`Pipeline.run` (``overwrite``, ``format``, ``retry_failed``, ``part``,
    ``keep_records``, ``on_input``, ``on_record``, ``on_skip``). ``framepipe caption``
    calls this too."""
    run_names = inspect.signature(Pipeline.run).parameters.keys() - {"self", "paths", "output"}
    kw: dict[str, Any] = dict(options)
    run_options = {k: kw.pop(k) for k in run_names & kw.keys()}
    return Pipeline(**kw).run(paths, output, **run_options)
