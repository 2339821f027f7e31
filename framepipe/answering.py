"""The answer stage of ``caption``: decoded clips in, final records out, one per clip.

:class:`AnswerSpec` says what answers (a generation backend, see
:mod:`framepipe.generate.backend`, with the run's questions and system prompt); it is
picklable, so a cluster's generation actors receive it. :class:`Answering` loads the backend
once where the answers are made and turns a stream of decoded
:class:`~framepipe.records.ClipJob`\\ s into records, ``batch_size`` clips at a time (a
backend that keeps requests in flight across clips, a server, gets each clip as it comes and
its record is made as its answers come back, ``batch_size`` clips in flight at most): a clip
that failed before passes through as its failed record, a batch that fails is retried clip
by clip so that one bad clip does not fail the others, and a clip the backend cannot answer
becomes a failed record (``stage: generate``); an error every later clip would hit too
(:class:`~framepipe.errors.StopRunError`) stops the run. Both engines answer through it: the
local one in the caption process, the Ray engine inside each generation actor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from framepipe.errors import FramepipeError, GenerationError, StopRunError
from framepipe.questions import default_question
from framepipe.records import ClipJob
from framepipe.types import ClipResult

if TYPE_CHECKING:
    from framepipe.generate.backend import Backend, BackendSpec

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_NOTE = (
    "made by a model with random weights (a test model): the answers are not captions"
)


def questions_for(questions: Sequence[str] | None, kind: str | None) -> list[str]:
    """The questions asked about a clip of ``kind``: those given, else the kind's default."""
    return list(questions) if questions else [default_question(kind)]


def truncated_of(answer: Any) -> list[bool | None] | None:
    """Per answer, whether it stopped at the token limit (None: the backend cannot tell; a
    backend of one's own may say nothing)."""
    got = getattr(answer, "truncated", None)
    if got is None or len(got) != len(answer.answers) or all(t is None for t in got):
        return None
    return [None if t is None else bool(t) for t in got]


@dataclass(frozen=True)
class AnswerSpec:
    """What answers every clip of a caption run (picklable)."""

    backend: BackendSpec
    questions: tuple[str, ...] | None = None
    """Asked about every clip (a manifest row's own replace them); None: the kind's default."""
    system: str | None = None

    @property
    def batch_size(self) -> int:
        """Clips answered together."""
        return max(1, int(getattr(self.backend.settings, "batch_size", 1) or 1))

    def generation(self) -> dict[str, Any]:
        """The generation settings, as every record names them."""
        return dict(self.backend.settings.to_json())

    def extra_key(self, kind: str | None, questions: Sequence[str] | None) -> dict[str, Any]:
        """What joins the resume key of a clip of ``kind`` (``questions``: its manifest
        row's): the backend's model, the questions, system prompt and generation settings
        (not the batch size: it does not change the answers)."""
        generation = {k: v for k, v in self.generation().items() if k != "batch_size"}
        return {
            "model": self.backend.key(),
            "questions": list(questions or questions_for(self.questions, kind)),
            "system": self.system,
            "generation": generation,
        }


class Answering:
    """The answer stage where it runs: the backend, loaded once, with the first clip that
    needs an answer (a run with nothing left to answer loads nothing), and the run's
    fields. :meth:`records` may run in several threads at once for a backend that keeps
    requests in flight (their pools share its ``max_concurrency``)."""

    def __init__(self, spec: AnswerSpec) -> None:
        self.spec = spec
        self.backend: Backend | None = None
        """The loaded backend (None until a clip needs an answer)."""
        self.load_s = 0.0
        """Seconds spent loading the backend."""
        self.generate_s = 0.0
        """Seconds spent answering (with requests in flight: with a clip in flight)."""
        self._lock = threading.Lock()
        self.model = dict(spec.backend.describe())
        """The model, as written on every record (known before it loads)."""
        self._generation = spec.generation()
        # on every record, in this order: the system prompt, what the outcome adds, the note
        self._system = {"system": spec.system} if spec.system is not None else {}
        self._note = {"note": RANDOM_WEIGHTS_NOTE} if self.model.get("random_weights") else {}

    def records(self, jobs: Iterable[ClipJob]) -> Iterator[ClipResult]:
        """The final record of every clip of ``jobs`` (a failed clip's at once): answered
        ``batch_size`` at a time (the last batch when ``jobs`` ends), or, by a backend that
        keeps requests in flight across clips (``in_flight``: a server), each clip as its
        answers come back, with at most ``batch_size`` clips in flight."""
        pending: list[ClipJob] = []
        flight: Any = None
        busy = [0.0]  # since when this call has had a clip in flight
        try:
            for job in jobs:
                if not job.ok:
                    yield self._record(job)
                    continue
                backend = self.load()  # with the first clip to answer, while others decode
                make = getattr(backend, "in_flight", None)
                if flight is None and callable(make):
                    flight = make()
                if flight is not None:
                    yield from self._submit(flight, job, busy)
                    continue
                pending.append(job)
                if len(pending) >= self.spec.batch_size:
                    yield from self.answer(pending)
                    pending = []
            if pending:
                yield from self.answer(pending)
            while flight is not None and flight.pending:
                yield from self._taken(flight, busy, block=True)
        finally:
            if flight is not None:  # clips still in flight (stopped): their requests too
                flight.close()

    def _submit(self, flight: Any, job: ClipJob, busy: list[float]) -> Iterator[ClipResult]:
        """Put ``job``'s questions in ``flight``; the records of the clips done meanwhile,
        waiting for some while ``batch_size`` clips are in flight."""
        req = self._requests([job])[0]
        if isinstance(req, BaseException):
            yield self._finished(job, req)
            return
        if not flight.pending:
            busy[0] = time.perf_counter()
        flight.submit(job, req, len(req.questions))
        yield from self._taken(flight, busy, block=False)
        while flight.pending >= self.spec.batch_size:
            yield from self._taken(flight, busy, block=True)

    def _taken(self, flight: Any, busy: list[float], *, block: bool) -> Iterator[ClipResult]:
        """The records of the clips whose answers all came back (with ``block``: one at
        least); the seconds with a clip in flight count as generating."""
        for job, result in flight.done(block=block):
            yield self._finished(job, result)
        if not flight.pending:
            with self._lock:
                self.generate_s += time.perf_counter() - busy[0]

    def load(self) -> Backend:
        """The backend, loaded on first use."""
        with self._lock:
            if self.backend is None:
                t0 = time.perf_counter()
                self.backend = self.spec.backend.load()
                self.load_s = time.perf_counter() - t0
            return self.backend

    def answer(self, jobs: list[ClipJob]) -> list[ClipResult]:
        """The final records of decoded ``jobs``, answered together (their frames freed)."""
        t0 = time.perf_counter()
        out = [self._finished(job, result) for job, result in zip(jobs, self._results(jobs))]
        self.generate_s += time.perf_counter() - t0
        return out

    def _finished(self, job: ClipJob, result: Any) -> ClipResult:
        """The final record of ``job`` given its answer or its error (its frames freed)."""
        job.batch = job.prepared = None  # free the frames
        if isinstance(result, BaseException):
            return self._record(job.fail(result, stage="generate"))
        tokens = None  # not known (a server that sent no counts): none recorded
        if result.prompt_tokens is not None and result.new_tokens is not None:
            tokens = {
                "prompt": int(result.prompt_tokens),
                "new": [int(x) for x in result.new_tokens],
            }
        # how many sequences were decoded together depends on the engine and the run's
        # schedule, like the timings: logged, not a field of the record (the same on
        # every engine)
        width = getattr(result, "batch_size", "?")
        log.debug("%s: decoded in a batch of %s", job.source, width)
        return self._record(
            job,
            prompt=result.prompt,
            answers=list(result.answers),
            truncated=truncated_of(result),
            timings_s={"generate_s": round(float(result.generate_s), 4)},
            tokens=tokens,
            generation=self._generation,
        )

    def _record(
        self,
        job: ClipJob,
        *,
        timings_s: dict[str, float] | None = None,
        tokens: Any = None,
        **fields: Any,
    ) -> ClipResult:
        outcome = {} if tokens is None else {"tokens": tokens}
        extra = {**self._system, **outcome, **self._note}
        questions = job.fields.get("questions") or questions_for(self.spec.questions, job.kind)
        fields.setdefault("generation", self._generation)
        return job.record(
            questions=questions, model=self.model, timings_s=timings_s, extra=extra, **fields
        )

    def _results(self, jobs: list[ClipJob]) -> list[Any]:
        """Answers (or the exception) per job; a failed batch is retried clip by clip so that
        one bad clip does not fail the others."""
        made = self._requests(jobs)
        reqs = [r for r in made if not isinstance(r, BaseException)]
        if len(reqs) == len(made):
            return self._answered(reqs)
        answers = iter(self._answered(reqs) if reqs else [])
        return [r if isinstance(r, BaseException) else next(answers) for r in made]

    def _requests(self, jobs: list[ClipJob]) -> list[Any]:
        """The request of each job, or its error: a request that cannot be made (a manifest
        row's question the prompt refuses, e.g. one holding the image placeholder) is its
        clip's error; the others are answered."""
        from framepipe.generate.config import Request

        made: list[Any] = []
        for job in jobs:
            qs = job.fields.get("questions") or questions_for(self.spec.questions, job.kind)
            try:
                # the record key seeds its sampled answers: the same on every engine and run
                made.append(Request(job.images(), qs, self.spec.system, key=job.key))
            except FramepipeError as exc:
                made.append(exc)
        return made

    def _answered(self, reqs: list[Any]) -> list[Any]:
        """Answers (or the exception) per request, as :meth:`_results`."""
        try:
            return self._answers(reqs)
        except StopRunError:
            raise
        except Exception as exc:
            if not isinstance(exc, FramepipeError):
                log.exception("generation failed for a batch of %d clip(s)", len(reqs))
            if len(reqs) == 1:
                return [exc]
        out: list[Any] = []
        for req in reqs:
            try:
                out.extend(self._answers([req]))
            except StopRunError:
                raise
            except Exception as exc:
                out.append(exc)
        return out

    def _answers(self, reqs: list[Any]) -> list[Any]:
        """The backend's answers to ``reqs`` (or a clip's own error); GenerationError unless
        there is exactly one per request (a shorter or longer list would give clips answers
        made from other clips' frames)."""
        answers = list(self.load().answer_each(reqs))
        if len(answers) != len(reqs):
            raise GenerationError(
                f"the generator gave {len(answers)} answers for {len(reqs)} clips"
            )
        return answers
