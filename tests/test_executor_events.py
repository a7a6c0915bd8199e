"""The trainer's events read back out of a Ray driver log: partial lines, noise, catching up."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from app.events import FinishedEvent, ProgressEvent, StartedEvent, dump_event
from app.executors.events import LogEventDecoder, decode_frames, decode_log, run_line

STARTED = StartedEvent(total_steps=3, device="cuda:0 (NVIDIA H200)", time=1.0)
STEPS = [
    ProgressEvent(
        step=step,
        total_steps=3,
        epoch=step / 3,
        loss=2.0 / step,
        learning_rate=1e-4,
        tokens_per_second=900.0,
        eta_seconds=3.0 - step,
        time=1.0 + step,
    )
    for step in (1, 2, 3)
]
FINISHED = FinishedEvent(status="completed", artifacts={"adapter": "adapter/"}, time=5.0)
EVENTS = [STARTED, *STEPS, FINISHED]

# What a driver log looks like: Ray's lines, the trainer's events, a library's stderr.
LOG = (
    "2026-12-01 10:00:00,000\tINFO job_manager.py:568 -- Runtime env is setting up.\n"
    + dump_event(STARTED).decode()
    + "Loading checkpoint shards: 100%|##########| 2/2\n"
    + "".join(dump_event(event).decode() for event in STEPS)
    + "{not json at all}\n"
    + dump_event(FINISHED).decode()
)


def test_a_whole_log_gives_every_event_in_order_and_keeps_the_other_lines():
    events, decoder = decode_log(LOG)
    assert events == EVENTS
    assert decoder.events_seen == 5
    assert list(decoder.other_lines) == [
        "2026-12-01 10:00:00,000\tINFO job_manager.py:568 -- Runtime env is setting up.",
        "Loading checkpoint shards: 100%|##########| 2/2",
        "{not json at all}",
    ]


@given(st.lists(st.integers(min_value=0, max_value=len(LOG)), max_size=30))
def test_frames_cut_anywhere_give_the_same_events(cuts):
    points = sorted({0, len(LOG), *cuts})
    frames = [LOG[a:b] for a, b in itertools.pairwise(points)]
    assert list(decode_frames(frames, LogEventDecoder())) == EVENTS


def test_catching_up_skips_the_events_already_delivered():
    events, _ = decode_log(LOG, skip=3)
    assert events == EVENTS[3:]
    decoder = LogEventDecoder(skip=2)
    assert list(decode_frames([LOG[:500], LOG[500:]], decoder)) == EVENTS[2:]
    assert decoder.events_seen == 5


def test_a_last_line_without_a_newline_counts_at_the_end():
    decoder = LogEventDecoder()
    assert decoder.feed(dump_event(FINISHED).decode().rstrip("\n")) == []
    assert decoder.finish() == [FINISHED]


def test_stderr_run_into_an_event_line_still_gives_the_event():
    line = "warning: something" + dump_event(FINISHED).decode()
    assert decode_log(line)[0] == [FINISHED]


def test_crlf_line_ends():
    assert decode_log(dump_event(FINISHED).decode().replace("\n", "\r\n"))[0] == [FINISHED]


def test_only_the_current_runs_lines_count_when_a_job_id_ran_before():
    # A resume reuses the id; the head appends the new run to the same log, after its line.
    first, second = (run_line("job1", f"MTM_RUN={token} python -m app.training") for token in "ab")
    cancelled = FinishedEvent(status="cancelled", time=2.0)
    log = (
        f"{first}\n{dump_event(STARTED).decode()}{dump_event(STEPS[0]).decode()}"
        f"{dump_event(cancelled).decode()}an error of the first run\n"
        f"{second}\n{LOG}"
    )
    events, decoder = decode_log(log, current_run=second)
    assert events == EVENTS and decoder.events_seen == 5
    assert "an error of the first run" not in decoder.other_lines
    assert decode_log(log, skip=4, current_run=second)[0] == [FINISHED]
    assert decode_log(log, current_run=first)[0] == [STARTED, STEPS[0], cancelled]
    # A run whose line has not come yet (its runtime environment is being set up): nothing.
    assert decode_log(log, current_run=run_line("job1", "MTM_RUN=c python"))[0] == []
