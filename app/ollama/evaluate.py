"""A published fine-tune against its base, on the job's validation examples, through Ollama.

The examples are the validation split the trainer held out for its eval loss (the dataset's
`split.json`, or the seeded split of the spec when it names none), read in record order: each
chat's last assistant turn is the reference, and the turns before it are what both models are
asked. Every example goes through the base and then the fine-tune, one request at a time, with
greedy, seeded decoding (`temperature` 0, a fixed `seed`), an explicit `num_ctx` and
`truncate: false`, so a prompt that does not fit is an error instead of being cut silently
(OLLAMA_API.md §3.3).

Scores are against the reference: exact match of the normalised answer (`normalise_answer`) and
SQuAD-style token F1 (`token_f1`), as means over the examples, and each model's generation speed
from the server's own counts. The whole run is stored only when it finished: the answers as JSON in
`<job folder>/evaluations/<timestamp>.json`, the scores in an `Evaluation` row. Any OllamaError
(or cancellation) before that leaves neither.
"""

from __future__ import annotations

import asyncio
import os
import re
import string
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.datasets.repository import dataset_files
from app.datasets.splits import validation_indices
from app.db.models import Dataset, Evaluation, Job, utc_now
from app.db.session import Database
from app.errors import BadInputError, KnownError, NotFoundError
from app.jobs.lifecycle import JobStatus
from app.jobs.service import get_job, job_dir
from app.ollama.client import OllamaClient
from app.ollama.types import ChatMessage
from app.paths import DataHome
from app.settings import Hyperparameters

EVALUATIONS_FOLDER = "evaluations"
DETAILS_VERSION = 1
MIN_NUM_CTX = 2048
SCORE_KEYS = (
    "exact_match_base",
    "exact_match_tuned",
    "token_f1_base",
    "token_f1_tuned",
    "tokens_per_second_base",
    "tokens_per_second_tuned",
    "examples",
)

Progress = Callable[[int, int], None]
Scores = dict[str, float | int | None]


@dataclass(frozen=True)
class Example:
    """One validation example: the conversation up to its last assistant turn, and that turn."""

    index: int  # the record's position in the dataset's records.jsonl
    messages: tuple[ChatMessage, ...]
    reference: str


@dataclass(frozen=True)
class Answer:
    """What one model answered, with the server's counts (None where it reported none)."""

    text: str
    eval_count: int | None
    eval_duration_ns: int | None
    prompt_eval_count: int | None
    done_reason: str | None  # "stop", or "length" when max_tokens cut the answer


@dataclass(frozen=True)
class ExampleResult:
    example: Example
    base: Answer
    tuned: Answer
    base_exact: bool
    tuned_exact: bool
    base_f1: float
    tuned_f1: float


@dataclass(frozen=True)
class EvaluationReport:
    job_id: str
    tuned_model: str
    base_model: str
    results: tuple[ExampleResult, ...]
    scores: Scores  # SCORE_KEYS
    evaluation_id: int | None
    # What the requests were sent with: temperature, seed, num_ctx, num_predict.
    options: dict[str, Any] = field(default_factory=dict)


# --- scoring ---------------------------------------------------------------------------------


_WHITESPACE = re.compile(r"\s+")
# SQuAD's normalisation drops English articles; it is what "SQuAD-style" F1 means.
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def normalise_answer(text: str) -> str:
    """The answer as exact match compares it: stripped, whitespace collapsed, case-folded.

    Punctuation stays: "Paris." and "Paris" differ here (token_f1 is the lenient score).
    """
    return _WHITESPACE.sub(" ", text).strip().casefold()


def token_f1(prediction: str, reference: str) -> float:
    """The SQuAD token F1 of `prediction` against `reference`, from 0 to 1.

    Both are normalised as the SQuAD evaluation script does: case-folded, punctuation removed
    (ASCII punctuation as in the script, and any Unicode punctuation too), the English articles
    a/an/the dropped, then split on whitespace. F1 is the harmonic mean of the precision and
    recall of the tokens in common, counted with multiplicity. As in SQuAD 2.0, two answers with
    no tokens at all score 1, and one empty answer against a non-empty one scores 0. Text without
    spaces between words (Chinese, Japanese) is one token, so there F1 is close to exact match.
    """
    predicted, expected = _f1_tokens(prediction), _f1_tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _f1_tokens(text: str) -> list[str]:
    lowered = text.casefold()
    kept = "".join(
        char
        for char in lowered
        if char not in _ASCII_PUNCTUATION and not unicodedata.category(char).startswith("P")
    )
    return _ARTICLES.sub(" ", kept).split()


# --- the examples ----------------------------------------------------------------------------


def validation_examples(
    database: Database, home: DataHome, job_id: str, limit: int
) -> list[Example]:
    """The first `limit` usable examples of the job's validation split, in record order.

    A record is usable when it is a chat with an assistant turn that is not a tool call, and with
    a user (or tool) turn before it. Blocking (reads the database and the dataset's files).
    BadInputError when the job's dataset is gone, it was trained without a validation split, or
    none of the held-out records is usable; NotFoundError when there is no such job.
    """
    if limit < 1:
        raise BadInputError(f"The number of examples must be at least 1, not {limit}.")
    job = get_job(database, job_id)
    return _examples(database, home, job, limit)


def _examples(database: Database, home: DataHome, job: Job, limit: int) -> list[Example]:
    dataset = _dataset_of(database, job)
    files = dataset_files(home, dataset)
    if not files.records.is_file():
        raise _files_missing(dataset)
    if _spec_split(job) is None:
        # A spec without a split file: the trainer drew the split from eval_fraction and seed.
        hyper = _hyperparameters(job)
        rows = sum(1 for _ in _record_lines(files.records, dataset))
        held_out = validation_indices(rows, float(hyper["eval_fraction"]), int(hyper["seed"]))
    else:
        held_out = _split_indices(files.split, dataset)
    if not held_out:
        raise BadInputError(
            f"Job {job.id} was trained without a validation split; set an evaluation fraction "
            f"for the dataset '{dataset.name}' and train a new job to evaluate on examples it "
            "did not learn from."
        )
    examples = list(_usable(files.records, dataset, set(held_out), limit))
    if not examples:
        raise BadInputError(
            f"None of the {len(held_out)} validation records of the dataset '{dataset.name}' is "
            "a chat that ends with an assistant answer, so there is nothing to compare the "
            "models on."
        )
    return examples


def _dataset_of(database: Database, job: Job) -> Dataset:
    dataset: Dataset | None = None
    if job.dataset_id is not None:
        with database.session() as session:
            dataset = session.get(Dataset, job.dataset_id)
    if dataset is None:
        raise BadInputError(
            f"The dataset '{job.dataset_name}' that job {job.id} was trained on has been "
            "deleted, so its validation examples are gone; evaluate a job whose dataset is still "
            "there."
        )
    return dataset


def _spec_split(job: Job) -> Any:
    source = job.spec.get("dataset")
    return source.get("split") if isinstance(source, dict) else None


def _hyperparameters(job: Job) -> dict[str, Any]:
    """The job's hyperparameters, with the defaults of the time for any the spec lacks."""
    defaults = Hyperparameters().model_dump()
    given = job.spec.get("hyperparameters")
    return {**defaults, **(given if isinstance(given, dict) else {})}


def _split_indices(path: Path, dataset: Dataset) -> list[int]:
    try:
        document = orjson.loads(path.read_bytes())
        indices = sorted({int(i) for i in document["validation_indices"]})
    except FileNotFoundError:
        raise _files_missing(dataset) from None
    except OSError as error:
        raise BadInputError(
            f"The split of the dataset '{dataset.name}' cannot be read ({error.strerror}); "
            "check the permissions of its folder."
        ) from None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise BadInputError(
            f"The split file of the dataset '{dataset.name}' is damaged; delete the dataset and "
            "import it again."
        ) from None
    return indices


def _files_missing(dataset: Dataset) -> BadInputError:
    return BadInputError(
        f"The files of the dataset '{dataset.name}' are missing; delete it and import it again."
    )


def _record_lines(path: Path, dataset: Dataset) -> Iterator[bytes]:
    """The non-blank lines of records.jsonl: line i is record i (as the trainer counts them)."""
    try:
        with path.open("rb") as file:
            for line in file:
                if line.strip():
                    yield line
    except OSError as error:
        raise BadInputError(
            f"The records of the dataset '{dataset.name}' cannot be read ({error.strerror}); "
            "check the permissions of its folder."
        ) from None


def _usable(path: Path, dataset: Dataset, held_out: set[int], limit: int) -> Iterator[Example]:
    found = 0
    for index, line in enumerate(_record_lines(path, dataset)):
        if index not in held_out:
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        example = example_from_record(index, record)
        if example is None:
            continue
        yield example
        found += 1
        if found >= limit:
            return


def example_from_record(index: int, record: Any) -> Example | None:
    """The example in one canonical record (app.datasets.formats), or None when it has none.

    The reference is the last assistant turn; turns after it are dropped. A plain-text record,
    a chat without an assistant answer, one whose answer is a tool call or empty, and one with
    nothing but system turns before the answer have no example.
    """
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list):
        return None
    last = next(
        (
            position
            for position in range(len(messages) - 1, -1, -1)
            if isinstance(messages[position], dict)
            and messages[position].get("role") == "assistant"
        ),
        None,
    )
    if last is None:
        return None
    answer = messages[last]
    reference = answer.get("content")
    if answer.get("tool_call") or not isinstance(reference, str) or not reference.strip():
        return None
    # As the trainer renders them: role and content only.
    prompt = tuple(
        ChatMessage(str(m.get("role")), str(m.get("content", "")))
        for m in messages[:last]
        if isinstance(m, dict)
    )
    if not any(message.role in ("user", "tool") for message in prompt):
        return None
    return Example(index=index, messages=prompt, reference=reference)


# --- the run ---------------------------------------------------------------------------------


async def evaluate(
    client: OllamaClient,
    database: Database,
    home: DataHome,
    job_id: str,
    *,
    tuned_model: str,
    base_model: str,
    examples: int = 20,
    num_ctx: int | None = None,
    seed: int = 0,
    max_tokens: int = 256,
    on_progress: Progress | None = None,
) -> EvaluationReport:
    """Ask both models each validation example, score them, and store the run.

    `num_ctx` defaults to the job's max_seq_length plus `max_tokens`, at least 2048 (Ollama still
    caps it at the model's trained context). `on_progress(done, total)` is called after each
    answer (the base's first; two per example). The database and the files are read and written
    in a worker thread. Raises
    BadInputError (see validation_examples, and for a job that did not complete), NotFoundError,
    or the OllamaError that stopped the run; nothing is stored then.
    """
    if max_tokens < 1:
        raise BadInputError(f"The answer limit must be at least 1 token, not {max_tokens}.")
    if num_ctx is not None and num_ctx < 1:
        raise BadInputError(f"The context length must be at least 1 token, not {num_ctx}.")
    job, chosen = await asyncio.to_thread(_prepare, database, home, job_id, examples)
    context = num_ctx or max(int(_hyperparameters(job)["max_seq_length"]) + max_tokens, MIN_NUM_CTX)
    options: dict[str, Any] = {
        "temperature": 0,
        "seed": seed,
        "num_ctx": context,
        "num_predict": max_tokens,
    }
    # One model at a time, all its examples: on a machine that holds one model in memory,
    # alternating would make Ollama reload a model for every answer.
    total = 2 * len(chosen)
    answers: dict[str, list[Answer]] = {}
    for offset, model in enumerate((base_model, tuned_model)):
        answers[model] = []
        for done, example in enumerate(chosen, 1 + offset * len(chosen)):
            answers[model].append(await _answer(client, model, example, options))
            if on_progress is not None:
                on_progress(done, total)
    pairs = zip(chosen, answers[base_model], answers[tuned_model], strict=True)
    results = [score_example(example, base, tuned) for example, base, tuned in pairs]
    report = EvaluationReport(
        job_id=job.id,
        tuned_model=tuned_model,
        base_model=base_model,
        results=tuple(results),
        scores=summarise(results),
        evaluation_id=None,
        options=options,
    )
    evaluation_id = await asyncio.to_thread(_store, database, home, report)
    return replace(report, evaluation_id=evaluation_id)


def _prepare(
    database: Database, home: DataHome, job_id: str, limit: int
) -> tuple[Job, list[Example]]:
    if limit < 1:
        raise BadInputError(f"The number of examples must be at least 1, not {limit}.")
    job = get_job(database, job_id)
    if job.status != JobStatus.COMPLETED:
        raise BadInputError(f"Job {job.id} is {job.status}; only a completed job can be evaluated.")
    return job, _examples(database, home, job, limit)


async def _answer(
    client: OllamaClient, model: str, example: Example, options: Mapping[str, Any]
) -> Answer:
    text, final = await client.chat_text(
        model, example.messages, options=dict(options), truncate=False
    )
    stats = final.stats
    return Answer(
        text=text,
        eval_count=stats.eval_count if stats else None,
        eval_duration_ns=stats.eval_duration if stats else None,
        prompt_eval_count=stats.prompt_eval_count if stats else None,
        done_reason=final.done_reason,
    )


def score_example(example: Example, base: Answer, tuned: Answer) -> ExampleResult:
    reference = normalise_answer(example.reference)
    return ExampleResult(
        example=example,
        base=base,
        tuned=tuned,
        base_exact=normalise_answer(base.text) == reference,
        tuned_exact=normalise_answer(tuned.text) == reference,
        base_f1=token_f1(base.text, example.reference),
        tuned_f1=token_f1(tuned.text, example.reference),
    )


def summarise(results: Sequence[ExampleResult]) -> Scores:
    """The means over the examples, and each model's tokens per second over all its answers."""
    count = len(results)

    def mean(values: Iterator[float]) -> float | None:
        return sum(values) / count if count else None

    return {
        "exact_match_base": mean(float(r.base_exact) for r in results),
        "exact_match_tuned": mean(float(r.tuned_exact) for r in results),
        "token_f1_base": mean(r.base_f1 for r in results),
        "token_f1_tuned": mean(r.tuned_f1 for r in results),
        "tokens_per_second_base": _speed(r.base for r in results),
        "tokens_per_second_tuned": _speed(r.tuned for r in results),
        "examples": count,
    }


def _speed(answers: Iterator[Answer]) -> float | None:
    """sum(eval_count) / sum(eval_duration): the server leaves out counts that are zero."""
    tokens = duration = 0
    for answer in answers:
        tokens += answer.eval_count or 0
        duration += answer.eval_duration_ns or 0
    return tokens / duration * 1e9 if tokens and duration else None


# --- storing and loading ---------------------------------------------------------------------


def _store(database: Database, home: DataHome, report: EvaluationReport) -> int:
    """Write the details file, then the row; the file goes again if the row cannot be added."""
    created = utc_now()
    with database.session() as session:
        if session.get(Job, report.job_id) is None:
            raise _deleted(report.job_id)
    path = _write_details(job_dir(home, report.job_id) / EVALUATIONS_FOLDER, created, report)
    try:
        with database.session() as session:
            row = Evaluation(
                job_id=report.job_id,
                tuned_model=report.tuned_model,
                base_model=report.base_model,
                examples=len(report.results),
                scores=report.scores,
                details_file=f"{EVALUATIONS_FOLDER}/{path.name}",
                created_at=created,
            )
            session.add(row)
            session.flush()
            evaluation_id = row.id
    except IntegrityError:
        path.unlink(missing_ok=True)
        raise _deleted(report.job_id) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return evaluation_id


def _deleted(job_id: str) -> NotFoundError:
    return NotFoundError(
        f"Job {job_id} was deleted while it was being evaluated; nothing was saved."
    )


def _write_details(folder: Path, created: datetime, report: EvaluationReport) -> Path:
    document = {**_details(report), "created_at": created.isoformat()}
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = _free_path(folder, created)
        handle, temporary = tempfile.mkstemp(prefix=".evaluation-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        raise KnownError(
            f"The evaluation could not be saved in {folder} ({error.strerror}); free some disk "
            "space or fix the folder's permissions, then run it again."
        ) from None
    return path


def _free_path(folder: Path, created: datetime) -> Path:
    stem = created.strftime("%Y%m%dT%H%M%S%fZ")
    path, number = folder / f"{stem}.json", 1
    while path.exists():
        number += 1
        path = folder / f"{stem}-{number}.json"
    return path


def _details(report: EvaluationReport) -> dict[str, Any]:
    return {
        "version": DETAILS_VERSION,
        "job_id": report.job_id,
        "tuned_model": report.tuned_model,
        "base_model": report.base_model,
        "options": report.options,
        "scores": report.scores,
        "results": [
            {
                "index": result.example.index,
                "messages": [message.to_json() for message in result.example.messages],
                "reference": result.example.reference,
                "base": result.base.__dict__,
                "tuned": result.tuned.__dict__,
                "base_exact": result.base_exact,
                "tuned_exact": result.tuned_exact,
                "base_f1": result.base_f1,
                "tuned_f1": result.tuned_f1,
            }
            for result in report.results
        ],
    }


def list_evaluations(database: Database, job_id: str) -> list[Evaluation]:
    """The job's evaluations, newest first."""
    query = (
        select(Evaluation)
        .where(Evaluation.job_id == job_id)
        .order_by(Evaluation.created_at.desc(), Evaluation.id.desc())
    )
    with database.session() as session:
        return list(session.scalars(query))


def load_report(home: DataHome, evaluation: Evaluation) -> EvaluationReport:
    """The stored run behind an Evaluation row; BadInputError when its file is gone or damaged."""
    path = job_dir(home, evaluation.job_id) / evaluation.details_file
    try:
        document = orjson.loads(path.read_bytes())
        results = tuple(_result(item) for item in document["results"])
        options = dict(document.get("options") or {})
    except FileNotFoundError:
        raise BadInputError(
            f"The answers of evaluation {evaluation.id} are missing ({path}); run the "
            "evaluation again."
        ) from None
    except OSError as error:
        raise BadInputError(
            f"The answers of evaluation {evaluation.id} cannot be read ({error.strerror}); "
            "check the permissions of the job folder."
        ) from None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise BadInputError(
            f"The answers of evaluation {evaluation.id} are damaged ({path}); run the "
            "evaluation again."
        ) from None
    return EvaluationReport(
        job_id=evaluation.job_id,
        tuned_model=evaluation.tuned_model,
        base_model=evaluation.base_model,
        results=results,
        scores=dict(evaluation.scores),
        evaluation_id=evaluation.id,
        options=options,
    )


def _result(item: dict[str, Any]) -> ExampleResult:
    example = Example(
        index=int(item["index"]),
        messages=tuple(ChatMessage(str(m["role"]), str(m["content"])) for m in item["messages"]),
        reference=str(item["reference"]),
    )
    return ExampleResult(
        example=example,
        base=_stored_answer(item["base"]),
        tuned=_stored_answer(item["tuned"]),
        base_exact=bool(item["base_exact"]),
        tuned_exact=bool(item["tuned_exact"]),
        base_f1=float(item["base_f1"]),
        tuned_f1=float(item["tuned_f1"]),
    )


def _stored_answer(item: dict[str, Any]) -> Answer:
    def number(key: str) -> int | None:
        value = item.get(key)
        return None if value is None else int(value)

    reason = item.get("done_reason")
    return Answer(
        text=str(item["text"]),
        eval_count=number("eval_count"),
        eval_duration_ns=number("eval_duration_ns"),
        prompt_eval_count=number("prompt_eval_count"),
        done_reason=None if reason is None else str(reason),
    )
