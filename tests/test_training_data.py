"""From records to batches: loss on the assistant only, truncation, splits, grouping, packing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from app.jobs.spec import DatasetSource, TrainingHyperparameters
from app.training.batching import BatchPlan, collate, pack
from app.training.data import read_records, split_records, tokenize
from app.training.errors import TrainingError
from tests import training_fixtures
from tests.training_fixtures import (
    chat,
    facts_records,
    losses_by_step,
    make_job,
    train_in_process,
    write_records,
)

tiny_model = training_fixtures.tiny_model


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


def learned_text(tokenizer, examples, index):
    ids, weights = examples.example(index)
    return tokenizer.decode(ids[weights > 0].tolist())


def test_only_the_assistant_turns_and_their_end_markers_are_learned(tokenizer):
    examples = tokenize([chat("Who are you?", "I am Quillby.")], tokenizer, 64)
    ids, _weights = examples.example(0)
    assert tokenizer.decode(ids.tolist()).startswith("<|im_start|>user\nWho are you?")
    assert learned_text(tokenizer, examples, 0) == "I am Quillby.<|im_end|>\n"


def test_each_turn_has_its_loss_weight(tokenizer):
    record = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello there", "loss_weight": 0.0},
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Hello there, friend!", "loss_weight": 0.5},
            {"role": "user", "content": "Again."},
            {"role": "assistant", "content": "Hello!"},
        ]
    }
    examples = tokenize([record], tokenizer, 256)
    ids, weights = examples.example(0)
    half = tokenizer.decode(ids[weights == 0.5].tolist())
    full = tokenizer.decode(ids[weights == 1.0].tolist())
    assert half == "Hello there, friend!<|im_end|>\n"
    assert full == "Hello!<|im_end|>\n"
    assert set(np.unique(weights).tolist()) == {0.0, 0.5, 1.0}


def test_a_text_trains_on_every_token_and_ends_with_the_end_token(tokenizer):
    examples = tokenize([{"text": "the quick brown fox"}], tokenizer, 64)
    ids, weights = examples.example(0)
    assert ids[-1] == tokenizer.eos_token_id
    assert weights[0] == 0 and (weights[1:] == 1).all()  # the first token has no context


def test_records_keep_their_order_whatever_their_kind(tokenizer):
    records = [{"text": "the lazy dog"}, chat("hi", "hello"), {"text": "the quick fox"}]
    examples = tokenize(records, tokenizer, 64)
    decoded = [tokenizer.decode(examples.example(i)[0].tolist()) for i in range(3)]
    assert decoded[0].startswith("the lazy") and "hello" in decoded[1]
    assert decoded[2].startswith("the quick")


def test_long_examples_are_cut_and_counted_and_unlearnable_ones_skipped(tokenizer):
    long_answer = chat("Say hello.", "hello " * 40)
    long_question = chat("hello " * 40, "hi")
    examples = tokenize([long_answer, long_question, chat("hi", "yo")], tokenizer, 24)
    assert len(examples) == 2  # the long question left no assistant token inside the limit
    assert examples.truncated == 2 and examples.skipped == 1
    assert examples.lengths.max() == 24


def test_tools_given_as_json_text_reach_the_template(tokenizer):
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = "{{ tools[0].name }}|" + tokenizer.chat_template
    record = chat("weather?", "sunny") | {"tools": json.dumps([{"name": "get_weather"}])}
    examples = tokenize([record], tokenizer, 64)
    assert tokenizer.decode(examples.example(0)[0].tolist()).startswith("get_weather|")


def test_a_record_the_template_cannot_render_is_skipped_and_counted(tokenizer):
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'tool' %}"
        "{{ raise_exception('no tools here') }}{% endif %}{{ m['content'] }}{% endfor %}"
    )
    tool_chat = {"messages": [*chat("q", "a")["messages"], {"role": "tool", "content": "{}"}]}
    examples = tokenize([chat("q", "a"), tool_chat], tokenizer, 64)
    assert len(examples) == 1 and examples.skipped == 1


def test_the_split_file_decides_the_validation_records(tmp_path):
    path = write_records(tmp_path, facts_records(1))
    split = tmp_path / "split.json"
    split.write_text(
        json.dumps({"seed": 1, "validation_fraction": 0.25, "validation_indices": [0, 5]})
    )
    records = read_records(path)
    train, validation = split_records(records, DatasetSource(records=path, split=split), 0.0, 1)
    assert validation == [records[0], records[5]] and len(train) == 6


def test_without_a_split_file_the_fraction_and_seed_split_alike_every_time(tmp_path):
    path = write_records(tmp_path, facts_records(4))
    source = DatasetSource(records=path)
    records = read_records(path)
    first = split_records(records, source, 0.25, 7)
    assert len(first[1]) == 8 and split_records(records, source, 0.25, 7) == first


def test_a_split_naming_records_the_dataset_lacks_is_refused(tmp_path):
    path = write_records(tmp_path, facts_records(1))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"validation_indices": [99]}))
    with pytest.raises(TrainingError, match="names records the dataset lacks"):
        split_records(read_records(path), DatasetSource(records=path, split=split), 0.0, 1)


def varied_examples(tokenizer, count=64, seed=3):
    rng = np.random.default_rng(seed)
    records = [chat("hi", "hello " * int(rng.integers(1, 30))) for _ in range(count)]
    return tokenize(records, tokenizer, 128)


def hyper(**changes):
    return TrainingHyperparameters(batch_size=8, max_seq_length=128, **changes)


def test_every_epoch_trains_every_example_once_in_an_order_fixed_by_seed_and_epoch(tokenizer):
    examples = varied_examples(tokenizer)
    plan = BatchPlan(examples, hyper(seed=5), pad_id=0)
    for epoch in range(3):
        order = plan.epoch_order(epoch)
        assert sorted(i for batch in order for i in batch) == list(range(len(examples)))
        assert BatchPlan(examples, hyper(seed=5), pad_id=0).epoch_order(epoch) == order
    assert plan.epoch_order(0) != plan.epoch_order(1)


def padded_tokens(plan, examples):
    return sum(plan.collate(batch).input_ids.numel() for batch in plan.epoch_order(0)), int(
        examples.lengths.sum()
    )


def test_length_grouping_pads_far_less_than_random_batches(tokenizer):
    examples = varied_examples(tokenizer, count=400)
    grouped, real = padded_tokens(BatchPlan(examples, hyper(), 0), examples)
    random, _ = padded_tokens(BatchPlan(examples, hyper(group_by_length=False), 0), examples)
    padded, _ = padded_tokens(BatchPlan(examples, hyper(padding="max_length"), 0), examples)
    assert grouped < 0.8 * random < padded
    assert grouped < 1.15 * real


def test_the_longest_batch_comes_first_so_a_run_that_will_not_fit_fails_at_once(tokenizer):
    examples = varied_examples(tokenizer)
    first = BatchPlan(examples, hyper(), 0).epoch_order(0)[0]
    assert examples.lengths.argmax() in first


def test_packing_puts_every_example_in_exactly_one_row_within_the_limit():
    lengths = np.asarray([5, 60, 33, 30, 2, 64, 17, 31, 1], np.int64)
    rows = pack(lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(lengths[row].sum() <= 64 for row in rows)
    assert len(rows) == 4  # 243 tokens need at least 4 rows of 64


def test_packed_examples_do_not_attend_to_one_another(tiny_model, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    examples = tokenize(
        [chat("Who are you?", "Quillby."), chat("Name a fruit.", "Apple.")], tokenizer, 64
    )
    alone = [collate(examples, [[i]], 0) for i in range(2)]
    together = collate(examples, [[0, 1]], 0, packed=True)
    with torch.no_grad():
        single = [model(input_ids=b.input_ids).logits[0] for b in alone]
        # Without a cache, as in training: transformers reads packing from the position ids.
        packed = model(
            input_ids=together.input_ids, position_ids=together.position_ids, use_cache=False
        ).logits[0]
        leaky = model(input_ids=together.input_ids, use_cache=False).logits[0]
    first = len(single[0])
    torch.testing.assert_close(packed[:first], single[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[first:], single[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(leaky[first:], single[1], atol=1e-3)  # the test can tell


def test_packing_keeps_the_tokens_and_needs_fewer_rows(tokenizer):
    examples = varied_examples(tokenizer, count=200)
    plan = BatchPlan(examples, hyper(packing=True), 0)
    assert len(plan.rows) < len(examples) / 2
    total = sum(plan.collate(batch).real_tokens for batch in plan.epoch_order(0))
    assert total == int(examples.lengths.sum())


@pytest.mark.parametrize("changes", [{"packing": True}, {"padding": "max_length"}])
def test_every_batching_trains(tmp_path, tiny_model, changes):
    records = write_records(tmp_path / "d", facts_records(2))
    outcome = train_in_process(make_job(tmp_path / "job", tiny_model, records, epochs=2, **changes))
    assert outcome.status == 0, outcome.last
    losses = list(losses_by_step(outcome).values())
    assert losses[-1] < losses[0]


def test_gradient_accumulation_gives_the_losses_of_the_whole_batch(tmp_path, tiny_model):
    records = write_records(tmp_path / "d", facts_records(2))
    whole = train_in_process(make_job(tmp_path / "a", tiny_model, records, max_steps=3))
    split = train_in_process(
        make_job(tmp_path / "b", tiny_model, records, max_steps=3, gradient_accumulation_steps=3)
    )
    assert losses_by_step(split) == pytest.approx(losses_by_step(whole), rel=1e-5)
