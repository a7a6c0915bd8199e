"""The playground against the stand-in Ollama server: streaming, history, options, compare mode,
Stop, and every way a chat can fail."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

TUNED = "tuned:latest"
BASE = "smollm2:135m"
TIMEOUT_MS = 5000


@pytest.fixture
def pane(qtbot, ollama_connection, ollama_server):  # type: ignore[no-untyped-def]
    """The pane on the stand-in, its pickers filled from /api/tags (the tuned model first)."""
    from ui.playground import PlaygroundPane

    ollama_server.add_model(TUNED)
    pane = PlaygroundPane(ollama_connection)
    qtbot.addWidget(pane)
    pane.resize(1000, 700)
    pane.show()
    ollama_connection.start()
    qtbot.waitUntil(lambda: pane.model_combo.count() == 2, timeout=TIMEOUT_MS)
    yield pane
    pane.shut_down()


def chat_requests(server):  # type: ignore[no-untyped-def]
    return [r for r in server.requests if r.path == "/api/chat"]


def send(qtbot, pane, prompt: str) -> None:  # type: ignore[no-untyped-def]
    """Type `prompt`, press Send, and wait for every side to finish answering."""
    pane.prompt_edit.setPlainText(prompt)
    qtbot.mouseClick(pane.send_button, Qt.MouseButton.LeftButton)
    assert pane.busy
    qtbot.waitUntil(lambda: not pane.busy, timeout=TIMEOUT_MS)


def test_a_reply_streams_in_token_by_token_with_its_speed(qtbot, pane, ollama_server):
    ollama_server.set_reply(TUNED, "Hello there, I am the tuned model.")
    snapshots: list[str] = []
    pane.left.view.document().contentsChanged.connect(
        lambda: snapshots.append(pane.left.view.toPlainText())
    )
    send(qtbot, pane, "Who are you?")
    text = pane.left.view.toPlainText()
    assert "You\nWho are you?" in text
    assert f"{TUNED}\nHello there, I am the tuned model." in text
    answers = [s.split(f"{TUNED}\n", 1)[1] for s in snapshots if f"{TUNED}\n" in s]
    pieces = [a.split("\n")[0] for a in answers]
    grown = [p for p in dict.fromkeys(pieces) if p]
    # one insert per token ("Hello ", "there, ", ...): the answer grew seven times
    assert grown[:3] == ["Hello ", "Hello there, ", "Hello there, I "]
    assert len(grown) == 7
    stats = pane.left.stats_label.text()
    assert stats.startswith("7 tokens · ") and stats.endswith(" tokens/s")
    assert stats in text
    assert pane.left.title_label.text() == TUNED
    assert pane.send_button.isEnabled() and not pane.stop_button.isEnabled()


def test_each_message_carries_the_conversation_so_far(qtbot, pane, ollama_server):
    ollama_server.set_reply(TUNED, lambda prompt: f"Answer to {prompt}")
    pane.system_edit.setPlainText("Be brief.")
    send(qtbot, pane, "first question")
    send(qtbot, pane, "second question")
    first, second = chat_requests(ollama_server)
    assert first.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
    ]
    assert second.json["model"] == TUNED
    assert second.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "Answer to first question"},
        {"role": "user", "content": "second question"},
    ]
    assert second.json["stream"] is True


def test_without_a_system_prompt_the_conversation_starts_with_the_user(qtbot, pane, ollama_server):
    send(qtbot, pane, "hello")
    (request,) = chat_requests(ollama_server)
    assert request.json["messages"] == [{"role": "user", "content": "hello"}]
    assert request.json["options"] == {"temperature": 0.8}  # empty fields: server defaults


def test_options_are_sent_as_given(qtbot, pane, ollama_server):
    ollama_server.set_reply(TUNED, "one two three four five six")
    pane.temperature_spin.setValue(0.3)
    pane.max_tokens_edit.setText("3")
    pane.seed_edit.setText("42")
    send(qtbot, pane, "count")
    (request,) = chat_requests(ollama_server)
    assert request.json["options"] == {"temperature": 0.3, "num_predict": 3, "seed": 42}
    assert f"{TUNED}\none two three \n" in pane.left.view.toPlainText()
    assert "done_reason: length" in pane.left.stats_label.text()
    assert pane.left.stats_label.text().startswith("3 tokens · ")


def test_minus_one_means_no_limit_and_is_sent(qtbot, pane, ollama_server):
    pane.max_tokens_edit.setText("-1")
    pane.temperature_spin.setValue(0.0)
    send(qtbot, pane, "hi")
    (request,) = chat_requests(ollama_server)
    assert request.json["options"] == {"temperature": 0.0, "num_predict": -1}
    assert "length" not in pane.left.stats_label.text()


def test_ctrl_enter_sends_and_enter_starts_a_new_line(qtbot, pane, ollama_server):
    pane.prompt_edit.setFocus()
    qtbot.keyClicks(pane.prompt_edit, "line one")
    qtbot.keyClick(pane.prompt_edit, Qt.Key.Key_Return)
    qtbot.keyClicks(pane.prompt_edit, "line two")
    assert not chat_requests(ollama_server)
    qtbot.keyClick(pane.prompt_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not pane.busy, timeout=TIMEOUT_MS)
    (request,) = chat_requests(ollama_server)
    assert request.json["messages"][-1]["content"] == "line one\nline two"
    assert pane.prompt_edit.toPlainText() == ""


def test_compare_sends_the_same_prompt_to_both_at_once(qtbot, pane, ollama_server):
    ollama_server.set_reply(TUNED, "tuned " * 20)
    ollama_server.set_reply(BASE, "base " * 20)
    ollama_server.token_delay = 0.01
    pane.compare(TUNED, BASE)
    assert pane.right.isVisible() and pane.base_combo.isEnabled()
    pane.prompt_edit.setPlainText("Say your name.")
    pane.send_button.click()

    def both_streaming() -> bool:
        left, right = pane.left.turn, pane.right.turn
        return bool(left and right and left.pieces and right.pieces)

    qtbot.waitUntil(both_streaming, timeout=TIMEOUT_MS)  # two streams at the same time
    qtbot.waitUntil(lambda: not pane.busy, timeout=TIMEOUT_MS)
    requests = chat_requests(ollama_server)
    assert sorted(r.json["model"] for r in requests) == sorted([TUNED, BASE])
    assert all(
        r.json["messages"] == [{"role": "user", "content": "Say your name."}] for r in requests
    )
    assert f"{TUNED}\n{'tuned ' * 20}" in pane.left.view.toPlainText()
    assert f"{BASE}\n{'base ' * 20}" in pane.right.view.toPlainText()
    assert "base" not in pane.left.view.toPlainText().replace(BASE, "")
    assert (pane.left.title_label.text(), pane.right.title_label.text()) == (TUNED, BASE)
    for side in (pane.left, pane.right):
        assert side.stats_label.text().startswith("20 tokens · ")
        assert side.stats_label.text().endswith("tokens/s")


def test_each_side_keeps_its_own_history(qtbot, pane, ollama_server):
    ollama_server.set_reply(TUNED, "from tuned")
    ollama_server.set_reply(BASE, "from base")
    pane.compare(TUNED, BASE)
    send(qtbot, pane, "one")
    send(qtbot, pane, "two")
    later = {r.json["model"]: r.json["messages"] for r in chat_requests(ollama_server)[2:]}
    assert later[TUNED][1] == {"role": "assistant", "content": "from tuned"}
    assert later[BASE][1] == {"role": "assistant", "content": "from base"}


def test_stop_keeps_the_partial_answer_and_the_pane_usable(qtbot, pane, ollama_server):
    words = [f"w{number}" for number in range(400)]
    ollama_server.set_reply(TUNED, " ".join(words))
    ollama_server.token_delay = 0.05
    messages: list[str] = []
    pane.status_message.connect(messages.append)
    pane.prompt_edit.setPlainText("talk a lot")
    pane.send_button.click()
    qtbot.waitUntil(lambda: len(pane.left.turn.pieces) >= 3, timeout=TIMEOUT_MS)
    task = pane.left.turn.task
    qtbot.mouseClick(pane.stop_button, Qt.MouseButton.LeftButton)
    assert not pane.busy and pane.send_button.isEnabled() and not pane.stop_button.isEnabled()
    qtbot.waitUntil(task.done, timeout=TIMEOUT_MS)
    assert task.cancelled()
    text = pane.left.view.toPlainText()
    assert text.endswith("\n(stopped)")
    partial = text.split(f"{TUNED}\n", 1)[1].rsplit("\n(stopped)", 1)[0]
    assert partial.startswith("w0 w1 w2") and len(partial.split()) < 100
    assert messages == ["Stopped the answer."]

    ollama_server.token_delay = 0.0
    ollama_server.set_reply(TUNED, "Short now.")
    send(qtbot, pane, "shorter please")
    assert pane.left.view.toPlainText().endswith("Short now.\n" + pane.left.stats_label.text())
    # the stopped answer stays in the history, as far as it got
    assert chat_requests(ollama_server)[-1].json["messages"] == [
        {"role": "user", "content": "talk a lot"},
        {"role": "assistant", "content": partial},
        {"role": "user", "content": "shorter please"},
    ]


def test_shut_down_cancels_the_streams(qtbot, pane, ollama_server):
    ollama_server.set_reply(TUNED, "word " * 400)
    ollama_server.token_delay = 0.05
    pane.prompt_edit.setPlainText("go")
    pane.send_button.click()
    qtbot.waitUntil(lambda: bool(pane.left.turn.pieces), timeout=TIMEOUT_MS)
    task = pane.left.turn.task
    pane.shut_down()
    qtbot.waitUntil(task.done, timeout=TIMEOUT_MS)
    assert task.cancelled()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (
            lambda server: server.fail_during_stream("/api/chat", "boom", after_lines=2),
            'Ollama could not chat with "tuned:latest": boom.',
        ),
        (
            lambda server: server.drop_connection("/api/chat", after_lines=2),
            "The connection to Ollama at {url} was lost before it could chat with "
            '"tuned:latest"; check that Ollama is still running and try again.',
        ),
        (
            lambda server: server.fail_before_stream("/api/chat", 500, "out of memory"),
            'Ollama failed to chat with "tuned:latest": out of memory.',
        ),
    ],
    ids=["error-line", "dropped", "http-500"],
)
def test_a_failed_answer_is_one_sentence_and_the_pane_stays_usable(
    qtbot, pane, ollama_server, fault, expected
):
    ollama_server.set_reply(TUNED, "alpha beta gamma delta epsilon")
    messages: list[str] = []
    pane.status_message.connect(messages.append)
    fault(ollama_server)
    send(qtbot, pane, "first")
    sentence = expected.format(url=ollama_server.url)
    assert messages == [sentence]
    assert_error_shown(pane.left.view, sentence)
    assert pane.left.stats_label.text() == sentence
    assert pane.prompt_edit.toPlainText() == "first"  # given back, to send again
    send(qtbot, pane, "again")
    assert pane.left.view.toPlainText().endswith(
        "alpha beta gamma delta epsilon\n" + pane.left.stats_label.text()
    )
    # the failed exchange is not part of the conversation any more
    assert chat_requests(ollama_server)[-1].json["messages"] == [
        {"role": "user", "content": "again"}
    ]


def test_an_unknown_model_is_one_sentence(qtbot, pane, ollama_server):
    messages: list[str] = []
    pane.status_message.connect(messages.append)
    pane.model_combo.setEditText("nope")
    send(qtbot, pane, "hello?")
    sentence = (
        "Ollama could not chat with \"nope\": model 'nope' not found; "
        "check the name with `ollama list`."
    )
    assert messages == [sentence]
    assert_error_shown(pane.left.view, sentence)
    pane.model_combo.setCurrentText(TUNED)
    send(qtbot, pane, "hello")
    assert "tokens/s" in pane.left.stats_label.text()


def test_ollama_down_is_one_sentence_on_each_side(qtbot, pane, ollama_server):
    messages: list[str] = []
    pane.status_message.connect(messages.append)
    pane.compare(TUNED, BASE)
    url = ollama_server.url
    ollama_server.stop()
    send(qtbot, pane, "anyone there?")
    sentence = (
        f"Ollama is not running at {url}; start it with `ollama serve` (or open the Ollama app) "
        "and try again."
    )
    assert set(messages) == {sentence}  # the pickers refreshing (compare) may say it too
    for side in (pane.left, pane.right):
        assert_error_shown(side.view, sentence)
    ollama_server.start()
    send(qtbot, pane, "and now?")
    assert "tokens/s" in pane.left.stats_label.text()
    assert "tokens/s" in pane.right.stats_label.text()


def assert_error_shown(view, sentence: str) -> None:  # type: ignore[no-untyped-def]
    """`sentence` is a block of its own in the transcript, in the error colour."""
    block = view.document().begin()
    while block.isValid() and block.text() != sentence:
        block = block.next()
    assert block.isValid(), view.toPlainText()
    fragment = block.begin().fragment()
    assert fragment.charFormat().foreground().color() == QColor("#b3261e")
    assert "\n" not in sentence and sentence.endswith(".")


def test_set_models_keeps_the_choice_while_it_is_there(pane):
    pane.set_models(["a:latest", "b:latest"])
    assert pane.model_combo.currentText() == "a:latest"
    assert pane.base_combo.currentText() == "b:latest"  # a different model to compare with
    pane.model_combo.setCurrentText("b:latest")
    pane.set_models(["c:latest", "b:latest"])
    assert pane.model_combo.currentText() == "b:latest"
    pane.set_models(["c:latest"])  # b has gone from Ollama
    assert pane.model_combo.currentText() == "c:latest"
    pane.model_combo.setEditText("typed:latest")
    pane.set_models(["c:latest", "d:latest"])
    assert pane.model_combo.currentText() == "typed:latest"
    assert [pane.model_combo.itemText(i) for i in range(pane.model_combo.count())] == [
        "c:latest",
        "d:latest",
    ]


def test_refresh_models_reads_the_tags(qtbot, pane, ollama_server):
    ollama_server.add_model("newer:latest")
    pane.refresh_models()
    qtbot.waitUntil(lambda: pane.model_combo.count() == 3, timeout=TIMEOUT_MS)
    assert pane.model_combo.findText("newer:latest") >= 0
    assert pane.model_combo.currentText() == TUNED  # the choice stays


def test_clear_forgets_the_conversation(qtbot, pane, ollama_server):
    send(qtbot, pane, "one")
    pane.clear_button.click()
    assert pane.left.view.toPlainText() == "" and pane.left.history == []
    send(qtbot, pane, "two")
    assert chat_requests(ollama_server)[-1].json["messages"] == [{"role": "user", "content": "two"}]


def test_the_view_follows_the_end_unless_scrolled_up(qtbot):
    from ui.chat_view import ChatView

    view = ChatView()
    qtbot.addWidget(view)
    view.resize(300, 150)
    view.show()
    view.begin_answer("m")
    for number in range(200):
        view.append_text(f"word{number} ")
    bar = view.verticalScrollBar()
    assert bar.maximum() > 0 and bar.value() == bar.maximum()
    bar.setValue(0)  # the user scrolls up to read
    for number in range(50):
        view.append_text(f"more{number} ")
    assert bar.value() == 0
    bar.setValue(bar.maximum())
    view.add_note("done")
    assert bar.value() == bar.maximum()
    assert not view.document().isUndoRedoEnabled()
