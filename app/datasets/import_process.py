"""Imports (and the import dialog's first look) run in a child process, so the window's event
loop never waits for the GIL.

Parsing a big file is CPU work in Python: in a thread of the window's process it would take the
GIL for long stretches (one `orjson.loads` of a large JSON array, a sort of a million lengths)
and the window would stutter. The child is this app again (`self_command("--run-import")`).

The protocol, one JSON object per line:
- parent -> child stdin: the request `{"action", "home", "path", "options"}` (action `import`
  or `inspect`), then `cancel` to stop. When
  the parent goes away its end of the pipe closes, which cancels too: no orphan imports.
- child -> parent stdout: `{"event": "progress", ...}` lines, then one `imported`, `inspected`
  or `failed`.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from app.datasets.importer import (
    ImportCancelled,
    ImportOptions,
    ImportProgress,
    Inspection,
    import_dataset,
    inspect_file,
)
from app.datasets.repository import cleanup_staging, get_dataset
from app.db.models import Dataset
from app.db.session import Database
from app.errors import KnownError
from app.paths import DataHome, self_command

log = logging.getLogger(__name__)

CHILD_FLAG = "--run-import"
_CANCEL = b"cancel\n"
_CANCEL_POLL_S = 0.1


def import_in_child(
    database: Database,
    home: DataHome,
    path: Path,
    options: ImportOptions,
    *,
    progress: Callable[[ImportProgress], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Dataset:
    """`import_dataset` in a child process; the same results, errors and cancellation."""
    request = _request("import", home, path, options)
    code, outcome, details = _run_child(request, progress, cancelled)
    if outcome is not None and outcome["event"] == "imported":
        return get_dataset(database, outcome["dataset_id"])
    cleanup_staging(home)  # a child that was killed could not tidy up after itself
    raise _failure(code, outcome, details)


def inspect_in_child(home: DataHome, path: Path, options: ImportOptions) -> Inspection:
    """`inspect_file` in a child process (a big JSON array is parsed whole to look at it)."""
    code, outcome, details = _run_child(_request("inspect", home, path, options), None, None)
    if outcome is not None and outcome["event"] == "inspected":
        return Inspection(**outcome["inspection"])
    raise _failure(code, outcome, details)


def _request(action: str, home: DataHome, path: Path, options: ImportOptions) -> dict[str, Any]:
    return {
        "action": action,
        "home": str(home.root),
        "path": str(path),
        "options": dataclasses.asdict(options),
    }


def _run_child(
    request: dict[str, Any],
    progress: Callable[[ImportProgress], None] | None,
    cancelled: Callable[[], bool] | None,
) -> tuple[int, dict[str, Any] | None, str]:
    """Run one request; returns the exit code, the last event (None if it died) and stderr."""
    with (
        tempfile.TemporaryFile() as stderr,
        subprocess.Popen(
            self_command(CHILD_FLAG), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        ) as child,
    ):
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(orjson.dumps(request) + b"\n")
        child.stdin.flush()
        watcher = _CancelWatcher(child, cancelled)
        try:
            outcome = _follow(child.stdout, progress)
        finally:
            watcher.stop()
            child.stdin.close()
            child.wait()
        stderr.seek(0)
        return child.returncode, outcome, stderr.read().decode(errors="replace")[-4000:]


def _follow(
    stdout: IO[bytes], progress: Callable[[ImportProgress], None] | None
) -> dict[str, Any] | None:
    """Read the child's events until its last one; None if it died without saying."""
    for line in stdout:
        event = orjson.loads(line)
        if event["event"] == "progress":
            if progress is not None:
                progress(
                    ImportProgress(event["bytes_read"], event["total_bytes"], event["records"])
                )
        else:
            return dict(event)
    return None


def _failure(code: int, outcome: dict[str, Any] | None, details: str) -> Exception:
    """The exception the child's last word stands for."""
    if outcome is not None and outcome.get("cancelled"):
        return ImportCancelled()
    if outcome is not None and outcome.get("known"):
        return KnownError(outcome["message"])
    log.error("import process failed", extra={"exit_code": code, "stderr": details})
    message = outcome["message"] if outcome else f"it stopped with exit code {code}"
    return KnownError(f"The import failed ({message}); nothing was kept, and the log has details.")


class _CancelWatcher:
    """Tells the child to stop when `cancelled()` turns true."""

    def __init__(self, child: subprocess.Popen[bytes], cancelled: Callable[[], bool] | None):
        self._child = child
        self._cancelled = cancelled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="import-cancel", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(_CANCEL_POLL_S):
            if self._cancelled is not None and self._cancelled():
                self._send_cancel()
                return

    def _send_cancel(self) -> None:
        try:
            assert self._child.stdin is not None
            self._child.stdin.write(_CANCEL)
            self._child.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the child has finished already

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- the child ----------------------------------------------------------------------------------


def child_main() -> int:
    """Entry point of the child: one import, events on stdout."""
    from app.context import AppContext

    request = orjson.loads(sys.stdin.buffer.readline())
    stop = threading.Event()
    threading.Thread(target=_read_cancel, args=(stop,), name="cancel", daemon=True).start()
    options = ImportOptions(**request["options"])
    if request["action"] == "inspect":
        return _inspect(Path(request["path"]), options)
    context = AppContext.open(request["home"])
    try:
        dataset = import_dataset(
            context.database,
            context.home,
            Path(request["path"]),
            options,
            progress=_emit_progress,
            cancelled=stop.is_set,
        )
    except ImportCancelled:
        return _emit({"event": "failed", "cancelled": True, "message": "Cancelled."}, 4)
    except KnownError as error:
        return _emit({"event": "failed", "known": True, "message": error.message}, 3)
    except Exception as error:
        log.exception("import failed")
        return _emit({"event": "failed", "known": False, "message": repr(error)}, 1)
    finally:
        context.close()
    return _emit({"event": "imported", "dataset_id": dataset.id}, 0)


def _inspect(path: Path, options: ImportOptions) -> int:
    try:
        inspection = inspect_file(path, options)
    except KnownError as error:
        return _emit({"event": "failed", "known": True, "message": error.message}, 3)
    except Exception as error:
        log.exception("inspection failed")
        return _emit({"event": "failed", "known": False, "message": repr(error)}, 1)
    return _emit({"event": "inspected", "inspection": dataclasses.asdict(inspection)}, 0)


def _read_cancel(stop: threading.Event) -> None:
    """`cancel`, or the parent closing the pipe (it quit or died), stops the import."""
    for line in sys.stdin.buffer:
        if line == _CANCEL:
            break
    stop.set()


def _emit_progress(progress: ImportProgress) -> None:
    _emit({"event": "progress", **dataclasses.asdict(progress)}, 0)


def _emit(event: dict[str, Any], code: int) -> int:
    sys.stdout.buffer.write(orjson.dumps(event, default=str) + b"\n")
    sys.stdout.buffer.flush()
    return code
