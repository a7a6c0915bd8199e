"""The window's Ollama connection against the stand-in server: the status bar follows the
server going down and up, an old server is refused in one sentence, the URL can change."""

from __future__ import annotations

from ui.ollama_connection import OllamaStatusLabel


def _connected(connection) -> bool:
    return connection.state is not None and connection.state.connected


def test_the_status_follows_the_server_down_and_up(qtbot, ollama_connection, ollama_server):
    label = OllamaStatusLabel(ollama_connection)
    qtbot.addWidget(label)
    ollama_connection.start()
    qtbot.waitUntil(lambda: _connected(ollama_connection), timeout=5000)
    assert ollama_server.version in label.text()
    ollama_server.stop()
    qtbot.waitUntil(lambda: not _connected(ollama_connection), timeout=5000)
    assert "not running: start it with" in label.text() and "ollama serve" in label.text()
    assert "ollama serve" in label.toolTip() and ollama_server.url in label.toolTip()
    ollama_server.start()
    qtbot.waitUntil(lambda: _connected(ollama_connection), timeout=5000)


def test_an_old_server_is_refused_in_one_sentence(qtbot, ollama_connection, ollama_server):
    label = OllamaStatusLabel(ollama_connection)
    qtbot.addWidget(label)
    ollama_server.version = "0.5.1"
    ollama_connection.start()
    qtbot.waitUntil(lambda: ollama_connection.state is not None, timeout=5000)
    state = ollama_connection.state
    assert not state.connected
    assert "0.5.1" in state.message and "0.5.5" in state.message
    assert state.too_old and "too old" in label.text()
    ollama_server.version = "0.6.0"  # works, with advice to update
    qtbot.waitUntil(lambda: _connected(ollama_connection), timeout=5000)
    assert "recommended" in ollama_connection.state.message


def test_a_new_url_is_checked_at_once(qtbot, ollama_connection, ollama_server):
    ollama_connection.start()
    qtbot.waitUntil(lambda: _connected(ollama_connection), timeout=5000)
    ollama_connection.set_url("http://127.0.0.1:9")  # nothing listens there
    qtbot.waitUntil(
        lambda: ollama_connection.state is not None and not _connected(ollama_connection),
        timeout=5000,
    )
    assert "127.0.0.1:9" in ollama_connection.state.message
    ollama_connection.set_url(ollama_server.url)
    qtbot.waitUntil(lambda: _connected(ollama_connection), timeout=5000)
