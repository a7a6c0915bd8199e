"""The working_dir bundle: deterministic, named by its content, and enough to run the trainer."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import pytest

from app.executors.bundle import BUNDLED_SPEC, build_bundle, deterministic_zip, training_sources


def test_the_same_code_and_spec_make_the_same_bytes():
    first, second = build_bundle(b'{"a": 1}'), build_bundle(b'{"a": 1}')
    assert first.data == second.data and first.uri == second.uri
    assert first.uri.startswith("gcs://_ray_pkg_") and first.uri.endswith(".zip")
    assert len(first.digest) == 16


def test_a_changed_spec_changes_the_hash():
    assert build_bundle(b'{"a": 1}').digest != build_bundle(b'{"a": 2}').digest


def test_entries_are_sorted_with_a_fixed_time_and_mode():
    archive = zipfile.ZipFile(io.BytesIO(deterministic_zip({"b.py": b"b", "a/c.py": b"c"})))
    infos = archive.infolist()
    assert [info.filename for info in infos] == ["a/c.py", "b.py"]
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {info.external_attr >> 16 for info in infos} == {0o644}


def test_the_bundle_holds_the_trainer_and_what_it_imports_and_nothing_of_the_window():
    names = set(training_sources())
    assert {
        "app/__init__.py",
        "app/training/__main__.py",
        "app/training/runner.py",
        "app/events.py",
        "app/errors.py",
        "app/jobs/spec.py",
        "app/settings.py",
        "app/executors/launch.py",
    } <= names
    assert not any(name.startswith(("ui/", "app/workers/", "app/db/migrations/")) for name in names)
    assert "app/cli.py" not in names and "app/executors/ray_client.py" not in names
    assert all(name.endswith(".py") for name in names)


@pytest.mark.slow
def test_every_bundled_module_imports_from_the_unpacked_bundle(tmp_path):
    """The closure is complete: each module imports with only the bundle on the path."""
    bundle = build_bundle(b"{}")
    zipfile.ZipFile(io.BytesIO(bundle.data)).extractall(tmp_path)
    assert (tmp_path / BUNDLED_SPEC).read_bytes() == b"{}"
    modules = [
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in training_sources()
        if not name.endswith("__main__.py")
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {sorted(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "import app\n"
        "print(app.__file__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(tmp_path))


def test_a_build_without_the_training_code_says_so_in_one_sentence(tmp_path, monkeypatch):
    """A frozen build reads the code from its cluster-code resource; one built without it
    cannot send a job, and says what to do."""
    import sys

    from app.errors import KnownError
    from app.executors import bundle

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(bundle, "resource_path", lambda name: tmp_path / name)
    assert bundle.code_root() == tmp_path / "cluster-code"
    with pytest.raises(KnownError) as raised:
        build_bundle(b"{}")
    message = raised.value.message
    assert message.count(". ") == 0 and message.endswith(".")
    assert "carries no training code" in message and "make package" in message
    # The same files, copied where a frozen build keeps them, make the same bundle.
    for name, data in training_sources().items():
        (tmp_path / "cluster-code" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cluster-code" / name).write_bytes(data)
    bundle.cluster_code_available.cache_clear()
    assert bundle.cluster_code_available()
    bundle.cluster_code_available.cache_clear()
    frozen = build_bundle(b"{}")
    monkeypatch.undo()
    assert frozen.data == build_bundle(b"{}").data
