"""The caption run's answering (the generate stage of both engines): decoded clips in, final
records out (one per clip).

:class:`Answerer` holds what every record of a caption run says (questions, system prompt,
model, generation settings, the random-weights note) and turns a batch of decoded
:class:`~framepipe.stages.ClipJob`\\ s into records with a loaded generator: a failed batch is
retried clip by clip so that one bad clip does not fail the others, and a clip the generator
cannot answer becomes a ``failed`` record (``stage: generate``). Both engines use it: the
local one in the caption process, the Ray engine inside each generation actor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from framepipe.errors import FramepipeError, GenerationError
from framepipe.questions import default_question
from framepipe.records import derive, fail
from framepipe.stages import ClipJob
from framepipe.types import ClipResult

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_NOTE = (
    "made by a model with random weights (a test model): the answers are not captions"
)


def questions_for(questions: Sequence[str] | None, kind: str | None) -> list[str]:
    """The questions asked about a clip of ``kind``: those given, else the kind's default."""
    return list(questions) if questions else [default_question(kind)]


@dataclass
class Answerer:
    """Makes a caption run's final records from decoded clips (picklable: plain fields)."""

    questions: Sequence[str] | None
    system: str | None
    model_info: dict[str, Any]
    """The loaded model, as written on every record (``Generator.describe()``)."""
    gen_json: dict[str, Any]
    """The generation settings, as written on every record."""
    _extra: dict[str, Any] = field(init=False, repr=False)
    _note: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # on every record, in this order: the system prompt, what the outcome adds, the note
        self._extra = {"system": self.system} if self.system is not None else {}
        random_weights = bool(self.model_info.get("random_weights"))
        self._note = {"note": RANDOM_WEIGHTS_NOTE} if random_weights else {}

    @property
    def random_weights(self) -> bool:
        return bool(self._note)

    def _fields(self, rec: ClipResult) -> dict[str, Any]:
        qs = rec.questions or questions_for(self.questions, rec.kind)  # a manifest row's own
        return {"questions": qs, "model": self.model_info, "generation": self.gen_json}

    def passthrough(self, rec: ClipResult) -> ClipResult:
        """The final record of a clip that failed before generation."""
        return derive(rec, extra={**self._extra, **self._note}, **self._fields(rec))

    def answer(self, gen: Any, jobs: list[ClipJob]) -> list[ClipResult]:
        """The final records of decoded ``jobs`` (answered together; frames freed)."""
        out: list[ClipResult] = []
        for job, result in zip(jobs, self._results(gen, jobs)):
            job.batch = None  # free the frames
            if isinstance(result, BaseException):
                extra = {**self._extra, "stage": "generate", **self._note}
                out.append(fail(job.record, result, extra=extra, **self._fields(job.record)))
                continue
            new = [int(x) for x in result.new_tokens]
            tokens = {"prompt": int(result.prompt_tokens), "new": new}
            rec = derive(
                job.record,
                prompt=result.prompt,
                answers=list(result.answers),
                timings_s={"generate_s": round(float(result.generate_s), 4)},
                extra={**self._extra, "tokens": tokens, **self._note},
                **self._fields(job.record),
            )
            out.append(rec)
        return out

    def _results(self, gen: Any, jobs: list[ClipJob]) -> list[Any]:
        """Answers (or the exception) per job; a failed batch is retried clip by clip so that
        one bad clip does not fail the others."""
        from framepipe.generate import Request

        reqs = []
        for job in jobs:
            assert job.batch is not None
            qs = job.record.questions or questions_for(self.questions, job.record.kind)
            reqs.append(Request(job.batch.images(), qs, self.system))
        try:
            return answers_for(gen, reqs)
        except Exception as exc:
            if not isinstance(exc, FramepipeError):
                log.exception("generation failed for a batch of %d clip(s)", len(reqs))
            if len(reqs) == 1:
                return [exc]
        out: list[Any] = []
        for req in reqs:
            try:
                out.extend(answers_for(gen, [req]))
            except Exception as exc:
                out.append(exc)
        return out


def answers_for(gen: Any, reqs: list[Any]) -> list[Any]:
    """``gen``'s answers to ``reqs`` (or a clip's own error, where the generator reports them
    per clip: the others keep their answers); GenerationError unless there is exactly one per
    request (a shorter or longer list would give clips answers made from other clips' frames)."""
    each = getattr(gen, "answer_each", None)
    answers = list(each(reqs) if callable(each) else gen.answer(reqs))
    if len(answers) != len(reqs):
        raise GenerationError(f"the generator gave {len(answers)} answers for {len(reqs)} clips")
    return answers
