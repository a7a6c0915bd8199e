"""The playground: chat with a model in Ollama, or with two at once ("compare with base").

Each side of the pane is one conversation with its own history; in compare mode the same prompt
goes to both models at the same time (two tasks) and each answer streams into its own side. The
answers arrive through `OllamaClient.chat` on the qasync loop (ui.async_tasks), and every token is
inserted into the transcript in the loop iteration that parsed it: nothing is batched on a timer,
so a token is on screen as soon as the window paints next.

History rules: a finished answer is kept; a stopped one is kept too, as far as it got (what the
model is told next is what the transcript shows); a failed exchange is left out, prompt and all,
so that the next message does not follow a question that was never answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QRegularExpression, Qt, Signal
from PySide6.QtGui import QIntValidator, QKeyEvent, QRegularExpressionValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.ollama.client import OllamaClient
from app.ollama.types import ChatChunk, ChatMessage, ModelSummary
from app.workers.background import TaskFailure
from ui.async_tasks import AsyncTasks
from ui.chat_view import ChatView
from ui.dialogs import ERROR_STYLE
from ui.ollama_connection import OllamaConnection, OllamaState

USER = "You"
STOPPED = "(stopped)"
DEFAULT_TEMPERATURE = 0.8  # Ollama's own default (OLLAMA_API.md §3.1)
_TITLE_STYLE = "font-weight: bold;"
_OPTIONS_WIDTH = 320


async def stream_answer(
    client: OllamaClient,
    model: str,
    messages: Sequence[ChatMessage],
    options: dict[str, Any],
    on_text: Callable[[str], None],
) -> ChatChunk:
    """Stream `model`'s answer to `messages`, handing each piece of text to `on_text` as it is
    parsed; returns the final chunk (done_reason, stats). Cancelling closes the stream, which the
    server sees as the request being cancelled."""
    _text, final = await client.chat_text(model, messages, options=options, on_text=on_text)
    return final


def answer_note(final: ChatChunk) -> str:
    """The line under a finished answer: tokens, tokens/s (the server's own counts) and, when
    the answer hit the max-tokens limit, that it was cut off."""
    stats = final.stats
    parts: list[str] = []
    if stats is not None and stats.eval_count:
        parts.append(f"{stats.eval_count:,} tokens")
    speed = stats.tokens_per_second if stats is not None else None
    parts.append(f"{speed:,.1f} tokens/s" if speed is not None else "speed not reported")
    if final.done_reason == "length":
        parts.append("cut off at the max-tokens limit (done_reason: length)")
    return " · ".join(parts)


def parse_integer(text: str) -> int | None:
    """The integer typed in a field, or None when it is empty (or only a sign so far)."""
    try:
        return int(text.strip())
    except ValueError:
        return None


@dataclass(eq=False)
class Turn:
    """One exchange in flight on one side: the user's message and the answer so far."""

    prompt: ChatMessage
    pieces: list[str] = field(default_factory=list)
    task: asyncio.Task[ChatChunk] | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class PromptEdit(QPlainTextEdit):
    """The multi-line prompt; Ctrl+Enter emits `submitted` (Enter alone starts a new line)."""

    submitted = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            event.accept()
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class ChatSide(QWidget):
    """One conversation: the model's name, the transcript, the last answer's figures, and the
    history that is sent with each new message."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title_label = QLabel()
        self.title_label.setTextFormat(Qt.TextFormat.PlainText)
        self.title_label.setStyleSheet(_TITLE_STYLE)
        self.view = ChatView()
        self.stats_label = QLabel()
        self.stats_label.setTextFormat(Qt.TextFormat.PlainText)
        self.stats_label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title_label)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.stats_label)
        self.history: list[ChatMessage] = []
        self.turn: Turn | None = None

    def set_model(self, name: str) -> None:
        self.title_label.setText(name.strip() or "No model chosen")

    def messages(self, turn: Turn, system: str) -> list[ChatMessage]:
        """What is sent for `turn`: the system prompt first when given, the history, the prompt."""
        head = [ChatMessage("system", system)] if system else []
        return [*head, *self.history, turn.prompt]

    def begin(self, model: str, prompt: str) -> Turn:
        self.turn = Turn(ChatMessage("user", prompt))
        self.view.add_message(USER, prompt)
        self.view.begin_answer(model)
        self.stats_label.setStyleSheet("")
        self.stats_label.setText("Answering…")
        return self.turn

    def append(self, turn: Turn, text: str) -> None:
        if turn is self.turn:
            turn.pieces.append(text)
            self.view.append_text(text)

    def finish(self, turn: Turn, final: ChatChunk) -> None:
        if turn is not self.turn:
            return
        self.turn = None
        self.history += [turn.prompt, ChatMessage("assistant", turn.text)]
        note = answer_note(final)
        self.view.add_note(note)
        self.stats_label.setText(note)

    def fail(self, turn: Turn, message: str) -> bool:
        """Show the error of `turn`; False when that turn is no longer the current one."""
        if turn is not self.turn:
            return False
        self.turn = None  # the exchange stays out of the history (see the module docstring)
        self.view.add_error(message)
        self.stats_label.setStyleSheet(ERROR_STYLE)
        self.stats_label.setText(message)
        return True

    def stop(self) -> None:
        """Cancel the answer being streamed and mark it stopped; what came so far is kept."""
        turn = self.turn
        if turn is None or turn.task is None or not turn.task.cancel():
            return  # nothing running, or it has just ended and its callback is on its way
        self.turn = None
        if turn.pieces:
            self.history += [turn.prompt, ChatMessage("assistant", turn.text)]
        self.view.add_note(STOPPED)
        self.stats_label.setText("Stopped.")

    def clear(self) -> None:
        self.stop()
        self.history = []
        self.view.clear()
        self.stats_label.clear()


class PlaygroundPane(QWidget):
    """Chat with the models in Ollama, one at a time or two side by side.

    Signals: `status_message(str)` for the status bar (errors in their one sentence).
    """

    status_message = Signal(str)

    def __init__(self, connection: OllamaConnection, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._connection = connection
        self._tasks = AsyncTasks(self)
        self._models_task: asyncio.Task[list[ModelSummary]] | None = None
        self._listed: set[str] = set()  # the names the pickers were last filled with
        self._build()
        connection.state_changed.connect(self.on_connection_state_changed)
        if connection.state is not None and connection.state.connected:
            self.refresh_models()

    # -- building ----------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QHBoxLayout(self)
        options = QVBoxLayout()
        options.addWidget(self._build_options())
        options.addStretch(1)  # the form keeps its natural height at the top
        layout.addLayout(options)
        chat = QVBoxLayout()
        chat.addWidget(self._build_sides(), 1)
        chat.addWidget(self._build_prompt())
        chat.addLayout(self._build_buttons())
        layout.addLayout(chat, 1)
        self._update_buttons()

    def _build_options(self) -> QGroupBox:
        box = QGroupBox("Model and options")
        box.setMaximumWidth(_OPTIONS_WIDTH)
        form = QFormLayout(box)
        self.model_combo = model_combo("The model to chat with")
        form.addRow("Model", self.model_combo)
        self.compare_box = QCheckBox("Compare with")
        self.compare_box.setToolTip("Send each prompt to a second model too, side by side")
        self.compare_box.toggled.connect(self.on_compare_box_toggled)
        self.base_combo = model_combo("The second model, e.g. the base the first was tuned from")
        self.base_combo.setEnabled(False)
        form.addRow(self.compare_box, self.base_combo)
        self.system_edit = QPlainTextEdit()
        self.system_edit.setPlaceholderText("Optional; the model's own system prompt if empty")
        self.system_edit.setFixedHeight(self.system_edit.fontMetrics().lineSpacing() * 5)
        form.addRow("System prompt", self.system_edit)
        self._build_sampling(form)
        return box

    def _build_sampling(self, form: QFormLayout) -> None:
        self.temperature_spin = QDoubleSpinBox()
        self.temperature_spin.setRange(0.0, 2.0)
        self.temperature_spin.setSingleStep(0.1)
        self.temperature_spin.setDecimals(2)
        self.temperature_spin.setValue(DEFAULT_TEMPERATURE)
        self.temperature_spin.setToolTip("0: the likeliest token every time; higher: more varied")
        form.addRow("Temperature", self.temperature_spin)
        self.max_tokens_edit = QLineEdit()
        self.max_tokens_edit.setValidator(QIntValidator(-1, 1_000_000, self.max_tokens_edit))
        self.max_tokens_edit.setPlaceholderText("no limit")
        self.max_tokens_edit.setToolTip(
            "num_predict, the most tokens an answer may have; -1: no limit"
        )
        form.addRow("Max tokens", self.max_tokens_edit)
        self.seed_edit = QLineEdit()
        digits = QRegularExpression(r"-?\d{0,18}")
        self.seed_edit.setValidator(QRegularExpressionValidator(digits, self.seed_edit))
        self.seed_edit.setPlaceholderText("random")
        self.seed_edit.setToolTip("The same seed, prompt and temperature give the same answer")
        form.addRow("Seed", self.seed_edit)

    def _build_sides(self) -> QSplitter:
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.left, self.right = ChatSide(), ChatSide()
        self.splitter.addWidget(self.left)
        self.splitter.addWidget(self.right)
        self.right.hide()
        self.left.set_model("")
        self.right.set_model("")
        self.model_combo.currentTextChanged.connect(self.left.set_model)
        self.base_combo.currentTextChanged.connect(self.right.set_model)
        return self.splitter

    def _build_prompt(self) -> PromptEdit:
        self.prompt_edit = PromptEdit()
        self.prompt_edit.setPlaceholderText("Type a message; Ctrl+Enter sends it")
        self.prompt_edit.setFixedHeight(self.prompt_edit.fontMetrics().lineSpacing() * 5)
        self.prompt_edit.submitted.connect(self.send)
        return self.prompt_edit

    def _build_buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.send_button = QPushButton("Send")
        self.send_button.setToolTip("Ctrl+Enter")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Start new conversations (the models forget this one)")
        self.clear_button.clicked.connect(self.clear)
        for button in (self.send_button, self.stop_button, self.clear_button):
            row.addWidget(button)
        row.addStretch(1)
        return row

    # -- public API --------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether an answer is streaming on either side."""
        return self.left.turn is not None or self.right.turn is not None

    @property
    def comparing(self) -> bool:
        return self.compare_box.isChecked()

    def set_models(self, names: list[str]) -> None:
        """Fill both pickers with `names`, keeping each one's choice if it is still there (a
        name typed by hand, or given to compare(), is kept even when it is not in the list)."""
        _fill(self.model_combo, names, self._listed, avoid="")
        _fill(self.base_combo, names, self._listed, avoid=self.model_combo.currentText())
        self._listed = set(names)

    def refresh_models(self) -> None:
        """Read the model list from Ollama (asynchronously) and fill the pickers with it."""
        if self._models_task is not None and not self._models_task.done():
            return
        self._models_task = self._tasks.start(
            self._connection.client.tags(),
            on_success=lambda models: self.set_models([model.name for model in models]),
            on_error=lambda failure: self.status_message.emit(failure.message),
        )

    def compare(self, tuned: str, base: str) -> None:
        """Compare `tuned` with `base` side by side, starting both conversations afresh so that
        both models are asked exactly the same things."""
        self.clear()
        self.model_combo.setCurrentText(tuned)
        self.base_combo.setCurrentText(base)
        self.compare_box.setChecked(True)
        self.refresh_models()  # a model published a moment ago is not in the pickers yet

    def send(self) -> None:
        """Send the prompt to the chosen model(s); ignored while an answer is streaming."""
        prompt = self.prompt_edit.toPlainText().strip()
        if not prompt or self.busy:
            return
        chosen = self._chosen()
        if chosen is None:
            return
        self.prompt_edit.clear()
        system = self.system_edit.toPlainText().strip()
        options = self.chat_options()
        client = self._connection.client
        for side, model in chosen:
            self._start(client, side, model, self._begin(side, model, prompt, system), options)
        self._update_buttons()

    def stop(self) -> None:
        """Stop the answers being streamed; what they said so far stays."""
        if not self.busy:
            return
        self.left.stop()
        self.right.stop()
        self._update_buttons()
        self.status_message.emit("Stopped the answer.")

    def clear(self) -> None:
        """Stop, then empty both transcripts and forget both conversations."""
        self.left.clear()
        self.right.clear()
        self._update_buttons()

    def shut_down(self) -> None:
        """Cancel everything in flight (the window is closing)."""
        self._tasks.cancel_all()

    def chat_options(self) -> dict[str, Any]:
        """The `options` of each request: the temperature, and num_predict and seed as typed
        (left out when empty, so that the server's defaults apply: no limit, a random seed)."""
        options: dict[str, Any] = {"temperature": round(self.temperature_spin.value(), 2)}
        for key, edit in (("num_predict", self.max_tokens_edit), ("seed", self.seed_edit)):
            value = parse_integer(edit.text())
            if value is not None:
                options[key] = value
        return options

    # -- slots -------------------------------------------------------------------------------

    def on_connection_state_changed(self, state: OllamaState) -> None:
        if state.connected:
            self.refresh_models()

    def on_compare_box_toggled(self, checked: bool) -> None:
        self.base_combo.setEnabled(checked)
        self.right.setVisible(checked)
        if not checked:
            self.right.stop()
            self._update_buttons()

    # -- streaming ---------------------------------------------------------------------------

    def _chosen(self) -> list[tuple[ChatSide, str]] | None:
        """The sides to send to, with their models; None (and a message) when one is missing."""
        chosen = [(self.left, self.model_combo.currentText().strip())]
        if self.comparing:
            chosen.append((self.right, self.base_combo.currentText().strip()))
        if any(not model for _side, model in chosen):
            self.status_message.emit("Choose a model to chat with first.")
            return None
        return chosen

    def _begin(self, side: ChatSide, model: str, prompt: str, system: str) -> list[ChatMessage]:
        side.begin(model, prompt)
        assert side.turn is not None
        return side.messages(side.turn, system)

    def _start(
        self,
        client: OllamaClient,
        side: ChatSide,
        model: str,
        messages: list[ChatMessage],
        options: dict[str, Any],
    ) -> None:
        turn = side.turn
        assert turn is not None
        turn.task = self._tasks.start(
            stream_answer(client, model, messages, options, lambda text: side.append(turn, text)),
            on_success=lambda final: side.finish(turn, final),
            on_error=lambda failure: self._on_failed(side, turn, failure),
            on_done=self._update_buttons,
        )

    def _on_failed(self, side: ChatSide, turn: Turn, failure: TaskFailure) -> None:
        message = failure.message
        if not failure.known:
            message = f"Something went wrong that should not have ({message}); see the log."
        if side.fail(turn, message):
            self.status_message.emit(message)
            if not self.prompt_edit.toPlainText():
                self.prompt_edit.setPlainText(turn.prompt.content)  # to send again as it was

    def _update_buttons(self) -> None:
        busy = self.busy
        self.send_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)


def model_combo(tip: str) -> QComboBox:
    """An editable picker of Ollama models (the list from /api/tags; any name may be typed)."""
    combo = QComboBox()
    combo.setEditable(True)
    combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
    combo.setToolTip(tip)
    line = combo.lineEdit()
    if line is not None:
        line.setPlaceholderText("model:tag")
    return combo


def _fill(combo: QComboBox, names: list[str], listed: set[str], *, avoid: str) -> None:
    """Put `names` in `combo`, keeping its choice when still there; a choice that came from the
    list before and has gone falls back to the first name (other than `avoid`, if any)."""
    previous = combo.currentText().strip()
    combo.clear()
    combo.addItems(names)
    index = combo.findText(previous) if previous else -1
    if index >= 0:
        combo.setCurrentIndex(index)
    elif previous and previous not in listed:
        combo.setEditText(previous)  # typed by hand or given to compare(): not ours to drop
    elif names:
        others = [number for number, name in enumerate(names) if name != avoid]
        combo.setCurrentIndex(others[0] if others else 0)
    else:
        combo.setEditText("")
