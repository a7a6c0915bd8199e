"""A chat transcript that an answer streams into, token by token.

Streaming has to stay cheap however long the conversation grows: every piece is inserted at the
end of the document with a QTextCursor (the transcript is never rebuilt), undo is off (an undo
step per token would grow without bound), and the plain-text layout only lays out the block that
changed. The view follows the end of the text unless the user has scrolled up to read.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QPlainTextEdit, QWidget

_ERROR_COLOUR = "#b3261e"
_NOTE_COLOUR = "#6b7280"


def _format(
    *, bold: bool = False, colour: str | None = None, italic: bool = False
) -> QTextCharFormat:
    char_format = QTextCharFormat()
    if bold:
        char_format.setFontWeight(QFont.Weight.Bold)
    if italic:
        char_format.setFontItalic(True)
    if colour is not None:
        char_format.setForeground(QColor(colour))
    return char_format


class ChatView(QPlainTextEdit):
    """A read-only transcript: messages, an answer being streamed, notes and errors."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setUndoRedoEnabled(False)
        self.document().setUndoRedoEnabled(False)
        self._speaker = _format(bold=True)
        self._body = _format()
        self._note = _format(colour=_NOTE_COLOUR, italic=True)
        self._error = _format(colour=_ERROR_COLOUR)

    def add_message(self, speaker: str, text: str) -> None:
        """A whole message under its speaker's name (the user's prompt)."""
        self._add_speaker(speaker)
        self._insert(text, self._body, new_block=True)

    def begin_answer(self, speaker: str) -> None:
        """Start an answer under `speaker`; append_text() then streams its text in."""
        self._add_speaker(speaker)
        self._insert("", self._body, new_block=True)

    def append_text(self, text: str) -> None:
        """A piece of the answer begun last, at the very end of the transcript."""
        self._insert(text, self._body, new_block=False)

    def add_note(self, text: str) -> None:
        """A line about the answer above it: its speed, why it ended, that it was stopped."""
        self._insert(text, self._note, new_block=True)

    def add_error(self, text: str) -> None:
        """A known error in its one sentence."""
        self._insert(text, self._error, new_block=True)

    @property
    def following(self) -> bool:
        """Whether the view is at the end of the text (and so keeps showing what arrives)."""
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum()

    def _add_speaker(self, speaker: str) -> None:
        if not self.document().isEmpty():
            self._insert("", self._body, new_block=True)  # a blank line between messages
        self._insert(speaker, self._speaker, new_block=True)

    def _insert(self, text: str, char_format: QTextCharFormat, *, new_block: bool) -> None:
        follow = self.following
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        if new_block and not self.document().isEmpty():
            cursor.insertBlock()
        cursor.insertText(text, char_format)
        if follow:
            bar = self.verticalScrollBar()
            bar.setValue(bar.maximum())
