"""``caption``: ask a multi-image vision-language model about every clip, one record each.

The Python API behind ``framepipe caption``::

    from framepipe import SampleConfig, caption, iter_caption
    summary = caption(["videos/"], sample=SampleConfig(n=8), questions=["What happens?"],
                      output="results.jsonl")
    for rec in summary.records:
        print(rec.source, rec.answers)
    for rec in iter_caption(["videos/"], sample=8):  # the same run, record by record
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

import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Generator as Gen
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framepipe.answering import RANDOM_WEIGHTS_NOTE, AnswerSpec, questions_for  # noqa: F401 - re-exported
from framepipe.config import SampleConfig, as_sample_config
from framepipe.discovery import Input, InputPaths
from framepipe.engine import DEFAULT_DECODE_TIMEOUT_S, EngineOptions, EngineTask, Work
from framepipe.errors import ConfigError, OutputError
from framepipe.generate.backend import BackendSpec, TransformersBackend
from framepipe.inputs import Shard, peek_kinds
from framepipe.inputs.remote import is_remote
from framepipe.output import check_writable, writer_target
from framepipe.output.remote import check_store, join, relative
from framepipe.questions import check_questions, check_system
from framepipe.records import ClipJob
from framepipe.runs.common import (
    OnInput,
    OnRecord,
    Output,
    RunSummary,
    begin,
    check_run,
    eager,
    save_clip_images,
    stream,
)
from framepipe.types import ClipResult
from framepipe.utils import closed_at_exit

if TYPE_CHECKING:
    from typing import TypedDict

    from typing_extensions import Unpack

    from framepipe.engine import RayOptions
    from framepipe.generate import GenerationSettings, Generator, ModelConfig

    class CaptionOptions(TypedDict, total=False):
        """The keywords of :func:`caption`: those of :class:`Pipeline`, then of its ``run``."""

        model: ModelConfig | str | None
        settings: GenerationSettings | Mapping[str, Any] | None
        sample: SampleConfig | int | None
        questions: Sequence[str] | str | None
        system: str | None
        workers: int | None
        prefetch: int | None
        decode_timeout_s: float | None
        frames_dir: str | Path | None
        generator: Generator | None
        backend: BackendSpec | None
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
    decode_s: float = 0.0
    """Sum of the clips' decode times (spent in worker processes, overlapping generation)."""
    generate_s: float = 0.0
    """Sum of the batches' generation times."""
    load_s: float = 0.0
    """Time spent checking and loading the model (part of ``elapsed_s``)."""
    check_s: float = 0.0
    """Of ``load_s``, the checks before any work; the rest is loading (none when no clip
    needed answering: the model loads with the first that does)."""

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
    lets you pass an already loaded :class:`~framepipe.generate.Generator`; ``backend``
    another generation backend instead of the model in this process, e.g.
    ``OpenAIBackend("http://host:8000/v1", settings=...)`` (a server; ``model``,
    ``settings`` and ``generator`` then belong to it).
    """

    def __init__(
        self,
        model: ModelConfig | str | None = None,
        settings: GenerationSettings | Mapping[str, Any] | None = None,
        *,
        sample: SampleConfig | int | None = None,
        questions: Sequence[str] | str | None = None,
        system: str | None = None,
        workers: int | None = None,
        prefetch: int | None = None,
        decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
        frames_dir: str | Path | None = None,
        generator: Generator | None = None,
        backend: BackendSpec | None = None,
        engine: str = "local",
        ray_options: RayOptions | None = None,
    ) -> None:
        self.questions = check_questions(questions)
        self.system = check_system(system)
        self.sample = as_sample_config(sample, "sample")
        if backend is not None and (model, settings, generator) != (None, None, None):
            raise ConfigError("pass the model and its settings to the backend itself")
        self.backend: BackendSpec = backend or TransformersBackend(model, settings, generator)
        """The generation backend (default: the model in this process); loaded once, kept."""
        self.workers = workers
        self.prefetch = prefetch
        self.decode_timeout_s = decode_timeout_s
        self.frames_dir = None if frames_dir is None else local_or_uri(frames_dir)
        self.engine = engine
        """``local`` (decoding worker processes, the model here) or ``ray`` (Ray Data: read
        and generation actors, see :mod:`framepipe.engine.ray`; ``ray_options``)."""
        self.ray_options = ray_options
        self._noted_random = False  # the random-weights warning, said once per loaded model

    @property
    def model_config(self) -> ModelConfig:
        """The in-process backend's model config."""
        assert isinstance(self.backend, TransformersBackend), "not the in-process backend"
        return self.backend.model

    @property
    def settings(self) -> GenerationSettings:
        """The generation settings: given, else those of a given generator, else defaults.
        Their ``batch_size`` is how many clips go to the generator at once."""
        return self.backend.settings

    def answer_spec(self) -> AnswerSpec:
        """What answers every clip of a run."""
        questions = tuple(self.questions) if self.questions else None
        return AnswerSpec(self.backend, questions, self.system)

    def questions_for(self, kind: str | None) -> list[str]:
        """The questions asked about a clip of ``kind``."""
        return questions_for(self.questions, kind)

    def check(self, kinds: Iterable[str | None] = ("video",)) -> None:
        """Read the model's config (no weights) and check that n frames and the questions
        fit its context window, and that its device, dtype, attention and quantization work
        here; raises ModelLoadError, ConfigError, MissingDependencyError or PromptError."""
        qs = [self.questions_for(k) for k in kinds]
        self.backend.check(self.sample.n, qs, self.system)
        self.backend.describe()

    def model_key(self) -> dict[str, Any]:
        """What identifies the model's answers in resume keys (id, revision or path, dtype,
        quantization), known before the weights load."""
        return self.backend.key()

    def load(self) -> Any:
        """The generator, loaded once (after :meth:`check`)."""
        return self.backend.load()

    # -- running ------------------------------------------------------------------------------
    @closed_at_exit
    def iter(
        self,
        paths: InputPaths,
        output: str | Path | None = None,
        *,
        overwrite: bool = False,
        format: str | None = None,
        retry_failed: bool = True,
        part: str | None = None,
        keep_records: bool = False,
        on_input: OnInput | None = None,
        on_record: OnRecord | None = None,
        on_skip: Callable[[int], None] | None = None,
        inputs_from: str | Path | Iterable[str | Path] | None = None,
        cache_dir: str | Path | None = None,
        shard: Shard | str | tuple[int, int] | None = None,
    ) -> Gen[ClipResult, None, CaptionSummary]:
        """:meth:`run`, lazily: yields each clip's record as it finishes (the records
        ``run`` returns and the output holds), in the order they are written. Nothing starts
        before the first record is asked for, and the run goes on only as they are: the
        decoding processes work at most ``prefetch`` clips ahead of the loop. Without
        ``output`` nothing is written (the default here); with one, each record is in it
        before it is yielded, and a re-run resumes as after :meth:`run`. Leaving the loop
        (``break``, an exception, Ctrl-C; or ``close()`` on the generator) stops the run:
        the decoders stop and the output keeps one record per clip yielded so far. A bad
        setting, or an output or ``frames_dir`` that cannot be written, is refused at the
        call; an error that stops the run is raised in the loop. The generator returns the
        run's :class:`CaptionSummary` (its ``records`` only with ``keep_records``)."""
        frames, so = self.frames_dir, self.sample.storage_options
        if isinstance(frames, Path):
            check_writable(frames / ".framepipe-check", "frames folder")
        elif frames is not None:
            check_store(join(frames, ""), so, "frames folder")
        check_run(self.sample, output, format, part)

        def run() -> Gen[ClipResult, None, CaptionSummary]:
            t0 = time.perf_counter()
            engine, inputs, notes = begin(
                paths,
                self.sample,
                self.engine,
                EngineOptions(self.workers, self.prefetch, self.ray_options, on_skip),
                on_input=on_input,
                inputs_from=inputs_from,
                cache_dir=cache_dir,
                shard=shard,
                default_questions=self.questions_for,
            )
            out = None if output is None else local_or_uri(output)
            summary = CaptionSummary(notes=list(notes), output=out)
            try:  # the engine is open: closed on every way out before ``stream`` owns it
                kinds, inputs = peek_kinds(inputs)
                if not kinds:
                    log.warning("no inputs found: nothing to do")
                    summary.elapsed_s = time.perf_counter() - t0
                    engine.close()
                    return summary
                t_check = time.perf_counter()
                self.check(kinds)
                answer = self.answer_spec()
            except BaseException:
                engine.close()
                raise
            if self.backend.random_weights() and not self._noted_random:
                self._noted_random = True  # once per loaded model, not at every run
                name = self.backend.key().get("id")
                log.warning("%s has random weights: its answers are not captions", name)

            def task(item: Input) -> EngineTask:
                return EngineTask(item, answer.extra_key(item.kind, item.questions))

            finish = None
            if frames is not None:
                rel_to = None if out is None else records_folder(out, format, part)
                finish = functools.partial(
                    _save_frames,
                    frames_dir=frames.resolve() if isinstance(frames, Path) else frames,
                    rel_to=rel_to,
                    storage_options=so,
                )
            work = Work(self.sample, self.decode_timeout_s, finish=finish, answer=answer)
            t_check = time.perf_counter() - t_check
            out_spec = Output(
                output,
                format,
                part,
                overwrite,
                retry_failed,
                keep_records,
                on_record,
                so,
                cache_dir,
            )
            try:
                yield from stream(
                    engine, (task(item) for item in inputs), work, out_spec, summary, t0
                )
            finally:
                summary.model = engine.model
                summary.load_s, summary.check_s = t_check + engine.load_s, t_check
                summary.generate_s = engine.generate_s
            return summary

        return run()

    run = eager(
        iter,
        "run",
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
        :meth:`iter` is the same run, its records handed over one by one as they finish.
        """,
        output="results.jsonl",
        keep_records=True,
    )


def local_or_uri(path: str | Path) -> str | Path:
    """A URI as it is (``Path`` would fold its ``//``), a local path as a ``Path``."""
    return str(path) if is_remote(str(path)) else Path(path)


def records_folder(output: str | Path, format: str | None, part: str | None) -> str | Path:
    """The folder of the records file the output ``output`` is written to."""
    if isinstance(output, str):  # a URI
        return output.rstrip("/") if output.endswith("/") else output.rpartition("/")[0]
    return writer_target(output, format, part).resolve().parent


def _save_frames(
    job: ClipJob,
    *,
    frames_dir: str | Path,
    rel_to: str | Path | None,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Decoder-side: write the clip's frames and contact sheet (in a folder, or straight to
    an object store) and add their paths, relative to the output (absolute without one, or
    when the output is elsewhere)."""
    try:
        frames, sheet = save_clip_images(job, frames_dir, storage_options=storage_options)
    except OutputError as exc:
        job.fail(exc)
        return

    def rel(p: str) -> str:
        full = join(frames_dir, p)
        return relative(full, rel_to) if rel_to is not None else full

    job.add(frames=[rel(p) for p in frames], contact_sheet=sheet and rel(sheet))


def caption(
    paths: InputPaths,
    output: str | Path | None = "results.jsonl",
    **options: Unpack[CaptionOptions],
) -> CaptionSummary:
    """Answer questions about every clip under ``paths`` into ``output``: a :class:`Pipeline`
    made from its ``options`` (``model``, ``settings``, ``sample``, ``questions``,
    ``system``, ``workers``, ``prefetch``, ``decode_timeout_s``, ``frames_dir``), run once
    with those of :meth:`Pipeline.run` (``overwrite``, ``format``, ``retry_failed``, ``part``,
    ``keep_records``, ``on_input``, ``on_record``, ``on_skip``). ``framepipe caption``
    calls this too."""
    pipe, run_options = _pipeline("caption", options)
    return pipe.run(paths, output, **run_options)


def iter_caption(
    paths: InputPaths,
    output: str | Path | None = None,
    **options: Unpack[CaptionOptions],
) -> Gen[ClipResult, None, CaptionSummary]:
    """:func:`caption`, lazily: each clip's record as it finishes (see
    :meth:`Pipeline.iter`; nothing is written without ``output``)::

        for rec in iter_caption(["videos/"], sample=8, questions=["What happens?"]):
            print(rec.source, rec.answers)

    The options are checked now; the run starts with the first record asked for."""
    pipe, run_options = _pipeline("iter_caption", options)
    return pipe.iter(paths, output, **run_options)


def _pipeline(name: str, options: Mapping[str, Any]) -> tuple[Pipeline, dict[str, Any]]:
    """The :class:`Pipeline` made from the ``options`` of :func:`caption` (called ``name``),
    and the options left for its run."""
    run_names = inspect.signature(Pipeline.run).parameters.keys() - {"self", "paths", "output"}
    known = run_names | inspect.signature(Pipeline).parameters.keys()
    unknown = sorted(options.keys() - known)
    if unknown:  # named as caption()'s, not as Pipeline's that it builds
        raise TypeError(
            f"{name}() got an unexpected keyword argument {unknown[0]!r}{_hint(unknown[0])}"
        )
    kw: dict[str, Any] = dict(options)
    run_options = {k: kw.pop(k) for k in run_names & kw.keys()}
    return Pipeline(**kw), run_options


def _hint(name: str) -> str:
    """Which config takes a field ``name`` (``caption(dtype=...)``: ``model=ModelConfig``),
    or its own name for transformers' ``name`` (``torch_dtype``), for the caller's error."""
    from framepipe.generate import GenerationSettings, ModelConfig
    from framepipe.generate.config import OTHER_NAMES

    own = OTHER_NAMES.get(name, "").partition("=")[0]
    configs = (("model", ModelConfig), ("settings", GenerationSettings), ("sample", SampleConfig))
    for arg, cls in configs:
        if (own or name) in {f.name for f in dataclasses.fields(cls)}:
            if own:
                return f" (framepipe's is {OTHER_NAMES[name]} in {arg}={cls.__name__}(...))"
            return f" (pass {arg}={cls.__name__}({name}=...))"
    return ""
