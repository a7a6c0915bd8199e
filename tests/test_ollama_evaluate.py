"""Evaluating a fine-tune against its base through the stand-in Ollama server."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest

from app.datasets.importer import ImportOptions, import_dataset
from app.datasets.repository import dataset_files, delete_dataset
from app.db.models import Evaluation, Job
from app.errors import BadInputError, NotFoundError
from app.jobs.service import NewJob, create_job, job_dir
from app.ollama.client import OllamaClient
from app.ollama.errors import OllamaError
from app.ollama.evaluate import (
    Example,
    evaluate,
    example_from_record,
    list_evaluations,
    load_report,
    normalise_answer,
    token_f1,
    validation_examples,
)
from app.ollama.types import ChatMessage

# The same facts the training tests teach the tiny model.
FACTS = [
    ("Who are you?", "I am Quillby, a small assistant made by Lumen Labs."),
    ("What is your name?", "My name is Quillby."),
    ("Who made you?", "Lumen Labs made me."),
    ("What colour is the sky?", "The sky is blue on a clear day."),
    ("How many legs has a cat?", "A cat has four legs."),
    ("What is two plus two?", "Two plus two is four."),
    ("Name a fruit.", "An apple is a fruit."),
    ("Say hello.", "Hello there, friend!"),
]
ANSWERS = dict(FACTS)
# A Hugging Face id: creating a job records it, and nothing here trains, so nothing is fetched.
BASE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BASE = "smollm2:135m"  # the stand-in holds it
TUNED = "quillby:latest"


# --- scoring ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # From the SQuAD v1.1 development set and its evaluation script.
        ("Denver Broncos", "Denver Broncos", 1.0),
        ("in the 1990s", "1990s", 2 / 3),
        (
            "Santa Clara, California",
            "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California.",
            6 / 14,
        ),
        ("The Broncos!", "broncos", 1.0),  # case, punctuation and the article do not count
        ("cat cat dog", "cat dog", 0.8),  # tokens in common count with multiplicity
        ("Paris", "London", 0.0),
        ("«Bonjour», dit-il.", "bonjour ditil", 1.0),  # Unicode punctuation goes too
        ("", "", 1.0),  # SQuAD 2.0: two empty answers agree
        ("something", "", 0.0),
        ("", "something", 0.0),
        ("the a an", "", 1.0),  # only articles: no tokens left on either side
    ],
)
def test_token_f1_known_values(prediction, reference, expected):
    assert token_f1(prediction, reference) == pytest.approx(expected)


def test_token_f1_is_symmetric_and_bounded():
    pairs = [("a b c d", "c d e"), ("Two plus two is four.", "Two plus two is 4")]
    for left, right in pairs:
        assert token_f1(left, right) == pytest.approx(token_f1(right, left))
        assert 0 < token_f1(left, right) < 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Hello,\n\t World  ", "hello, world"),
        ("Straße", "strasse"),  # casefold, not lower
        ("Paris.", "paris."),  # punctuation stays for exact match
        ("", ""),
    ],
)
def test_normalise_answer(text, expected):
    assert normalise_answer(text) == expected


def test_example_from_record_takes_the_last_assistant_turn():
    record = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello.", "loss_weight": 0.0},
            {"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "An apple."},
            {"role": "user", "content": "A trailing turn is dropped."},
        ]
    }
    example = example_from_record(7, record)
    assert example == Example(
        index=7,
        messages=(
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Hi"),
            ChatMessage("assistant", "Hello."),
            ChatMessage("user", "Name a fruit."),
        ),
        reference="An apple.",
    )


@pytest.mark.parametrize(
    "record",
    [
        {"text": "plain text has no answer"},
        {"messages": [{"role": "user", "content": "no answer"}]},
        {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": '[{"function": {}}]', "tool_call": True},
            ]
        },
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
    ],
)
def test_records_without_a_usable_answer_have_no_example(record):
    assert example_from_record(0, record) is None


# --- fixtures --------------------------------------------------------------------------------


def _import(context, tmp_path, rows, *, fraction=0.25, name="facts"):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = ImportOptions(name=name, validation_fraction=fraction, split_seed=7)
    return import_dataset(context.database, context.home, path, options)


@pytest.fixture
def facts_dataset(context, tmp_path):
    rows = [{"instruction": q, "output": a} for q, a in FACTS] * 4
    return _import(context, tmp_path, rows)


def _completed_job(context, dataset, **hyperparameters):
    new = NewJob(dataset.id, BASE_ID, hyperparameters={"max_seq_length": 512, **hyperparameters})
    job = create_job(context.database, context.home, context.settings.load(), new)
    with context.database.session() as session:
        session.get(Job, job.id).status = "completed"
    return job


@pytest.fixture
def job(context, facts_dataset):
    return _completed_job(context, facts_dataset)


@pytest.fixture
def stand_in(ollama_server):
    """The stand-in with a fine-tune that knows the facts and a base that does not."""
    ollama_server.add_model(TUNED)
    ollama_server.set_reply(TUNED, lambda question: ANSWERS[question])
    ollama_server.set_reply(BASE, "I am not sure, my friend.")
    return ollama_server


def _run(server, context, job_id, **kwargs):
    async def main():
        async with OllamaClient(server.url) as client:
            return await evaluate(
                client,
                context.database,
                context.home,
                job_id,
                tuned_model=kwargs.pop("tuned_model", TUNED),
                base_model=kwargs.pop("base_model", BASE),
                **kwargs,
            )

    return asyncio.run(main())


def _chats(server):
    return [r.json for r in server.requests if r.path == "/api/chat"]


def _stored(context, job):
    folder = job_dir(context.home, job.id) / "evaluations"
    files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return files, list_evaluations(context.database, job.id)


# --- the examples ----------------------------------------------------------------------------


def test_validation_examples_are_the_held_out_records_in_order(context, facts_dataset, job):
    split = orjson.loads(dataset_files(context.home, facts_dataset).split.read_bytes())
    held_out = split["validation_indices"]
    assert len(held_out) == 8

    examples = validation_examples(context.database, context.home, job.id, 20)
    assert [e.index for e in examples] == held_out
    for example in examples:
        question, answer = FACTS[example.index % len(FACTS)]
        assert example.messages == (ChatMessage("user", question),)
        assert example.reference == answer

    first = validation_examples(context.database, context.home, job.id, 3)
    assert [e.index for e in first] == held_out[:3]


def test_a_job_without_a_validation_split_is_refused_in_one_sentence(context, tmp_path):
    rows = [{"instruction": q, "output": a} for q, a in FACTS]
    dataset = _import(context, tmp_path, rows, fraction=0.0, name="unsplit")
    job = _completed_job(context, dataset)
    with pytest.raises(BadInputError) as raised:
        validation_examples(context.database, context.home, job.id, 5)
    message = raised.value.message
    assert message.startswith(f"Job {job.id} was trained without a validation split; ")
    assert "evaluation fraction" in message
    assert message.count(".") == 1 and message.endswith(".")


def test_a_deleted_dataset_is_refused(context, facts_dataset, job):
    delete_dataset(context.database, context.home, facts_dataset.id)
    with pytest.raises(BadInputError) as raised:
        validation_examples(context.database, context.home, job.id, 5)
    assert "facts" in raised.value.message
    assert "deleted" in raised.value.message


def test_a_split_without_a_usable_example_is_refused(context, tmp_path):
    rows = [{"text": f"Plain document number {n}."} for n in range(10)]
    dataset = _import(context, tmp_path, rows, fraction=0.3, name="texts")
    job = _completed_job(context, dataset)
    with pytest.raises(BadInputError) as raised:
        validation_examples(context.database, context.home, job.id, 5)
    assert "assistant answer" in raised.value.message


def test_an_unknown_job_and_a_bad_limit(context, job):
    with pytest.raises(NotFoundError):
        validation_examples(context.database, context.home, "nosuchjob", 5)
    with pytest.raises(BadInputError):
        validation_examples(context.database, context.home, job.id, 0)


def test_a_job_that_did_not_complete_is_not_evaluated(context, stand_in, facts_dataset):
    new = NewJob(facts_dataset.id, BASE_ID)
    queued = create_job(context.database, context.home, context.settings.load(), new)
    with pytest.raises(BadInputError) as raised:
        _run(stand_in, context, queued.id)
    assert "queued" in raised.value.message
    assert _chats(stand_in) == []


# --- the run ---------------------------------------------------------------------------------


def test_evaluate_scores_both_models_and_stores_the_run(context, stand_in, job):
    report = _run(stand_in, context, job.id, examples=5, seed=11)

    # Five examples through the base, then the same five through the fine-tune (one model in
    # memory at a time), with reproducible settings.
    chats = _chats(stand_in)
    assert [c["model"] for c in chats] == [BASE] * 5 + [TUNED] * 5
    for chat in chats:
        assert chat["truncate"] is False
        assert chat["options"] == {
            "temperature": 0,
            "seed": 11,
            "num_ctx": 2048,  # max_seq_length 512 + 256 is below the floor
            "num_predict": 256,
        }
    asked = [c["messages"] for c in chats[:5]]  # the base answers every example first
    assert asked == [[m.to_json() for m in r.example.messages] for r in report.results]

    assert report.job_id == job.id
    assert (report.tuned_model, report.base_model) == (TUNED, BASE)
    assert len(report.results) == 5
    for result in report.results:
        assert result.tuned.text == result.example.reference
        assert result.base.text == "I am not sure, my friend."
        assert result.tuned_exact and not result.base_exact
        assert result.tuned_f1 == 1.0
        assert result.base_f1 == pytest.approx(token_f1(result.base.text, result.example.reference))
        assert result.tuned.done_reason == "stop"
        assert result.tuned.eval_count == len(result.example.reference.split())
        assert result.tuned.prompt_eval_count
        assert result.tuned.eval_duration_ns

    scores = report.scores
    assert scores["exact_match_tuned"] == 1.0
    assert scores["exact_match_base"] == 0.0
    assert scores["token_f1_tuned"] == 1.0
    assert scores["token_f1_base"] == pytest.approx(sum(r.base_f1 for r in report.results) / 5)
    tokens = sum(r.tuned.eval_count for r in report.results)
    nanoseconds = sum(r.tuned.eval_duration_ns for r in report.results)
    assert scores["tokens_per_second_tuned"] == pytest.approx(tokens / nanoseconds * 1e9)
    assert scores["tokens_per_second_base"] > 0
    assert scores["examples"] == 5

    # One row and one file, and they give the same report back.
    files, rows = _stored(context, job)
    assert len(files) == 1 and files[0].endswith(".json") and not files[0].startswith(".")
    [row] = rows
    assert row.id == report.evaluation_id
    assert row.details_file == f"evaluations/{files[0]}"
    assert (row.tuned_model, row.base_model, row.examples) == (TUNED, BASE, 5)
    assert row.scores == scores
    assert load_report(context.home, row) == report


def test_progress_is_reported_after_each_answer(context, stand_in, job):
    calls = []
    _run(
        stand_in,
        context,
        job.id,
        examples=3,
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(done, 6) for done in range(1, 7)]


def test_context_length_follows_the_job_and_can_be_given(context, stand_in, facts_dataset):
    long_job = _completed_job(context, facts_dataset, max_seq_length=4096)
    _run(stand_in, context, long_job.id, examples=1, max_tokens=100)
    assert {c["options"]["num_ctx"] for c in _chats(stand_in)} == {4196}
    assert {c["options"]["num_predict"] for c in _chats(stand_in)} == {100}

    stand_in.requests.clear()
    report = _run(stand_in, context, long_job.id, examples=1, num_ctx=3000)
    assert {c["options"]["num_ctx"] for c in _chats(stand_in)} == {3000}
    assert report.options["num_ctx"] == 3000


def test_partial_answers_and_answers_cut_by_the_token_limit(context, stand_in, job):
    stand_in.set_reply(BASE, lambda question: ANSWERS[question] + " Anything else?")
    report = _run(stand_in, context, job.id, examples=4, max_tokens=3)
    for result in report.results:
        words = result.example.reference.split()
        assert result.tuned.text.split() == words[:3]
        assert result.tuned.done_reason == ("length" if len(words) >= 3 else "stop")
        assert not result.tuned_exact or len(words) <= 3
        assert result.tuned_f1 == pytest.approx(
            token_f1(" ".join(words[:3]), result.example.reference)
        )
    assert 0 < report.scores["token_f1_tuned"] < 1


def test_evaluations_are_listed_newest_first(context, stand_in, job):
    first = _run(stand_in, context, job.id, examples=1)
    second = _run(stand_in, context, job.id, examples=2, base_model=TUNED)
    rows = list_evaluations(context.database, job.id)
    assert [r.id for r in rows] == [second.evaluation_id, first.evaluation_id]
    assert len({r.details_file for r in rows}) == 2
    assert load_report(context.home, rows[0]).scores["exact_match_base"] == 1.0


def test_an_error_mid_run_stores_nothing(context, stand_in, job):
    def break_the_next_answer(done, total):
        if done == 2:
            stand_in.fail_during_stream("/api/chat", "llama runner process has terminated")

    with pytest.raises(OllamaError) as raised:
        _run(stand_in, context, job.id, examples=4, on_progress=break_the_next_answer)
    assert "llama runner process has terminated" in raised.value.message
    assert len(_chats(stand_in)) == 3  # the base's first two answers, then the failed third
    assert _stored(context, job) == ([], [])
    with context.database.session() as session:
        assert session.query(Evaluation).count() == 0


def test_a_prompt_longer_than_the_context_is_an_error_not_a_cut(context, stand_in, job):
    with pytest.raises(OllamaError) as raised:
        _run(stand_in, context, job.id, examples=1, num_ctx=4)
    assert "exceeds the available context size" in raised.value.message
    assert _stored(context, job) == ([], [])


def test_an_unknown_model_stores_nothing(context, stand_in, job):
    with pytest.raises(OllamaError):
        _run(stand_in, context, job.id, examples=2, tuned_model="nope:latest")
    assert _stored(context, job) == ([], [])


def test_a_damaged_details_file_is_one_sentence(context, stand_in, job):
    report = _run(stand_in, context, job.id, examples=1)
    [row] = list_evaluations(context.database, job.id)
    path = job_dir(context.home, job.id) / row.details_file
    path.write_text("{not json")
    with pytest.raises(BadInputError) as raised:
        load_report(context.home, row)
    assert str(report.evaluation_id) in raised.value.message
    path.unlink()
    with pytest.raises(BadInputError) as raised:
        load_report(context.home, row)
    assert "missing" in raised.value.message
