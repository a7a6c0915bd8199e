"""The process-level behaviour: `python -m app --smoke`, the `mtm` CLI's exit codes and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REAL_DATA, REPO_ROOT, run_app


def test_smoke_opens_the_window_paints_and_exits_without_heavy_modules(tmp_path):
    result = run_app("--smoke", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["event"] == "first_paint"
    assert report["heavy_modules"] == []  # no torch, transformers, peft, pandas at first paint
    assert result.stderr.strip() == ""


def test_smoke_refuses_a_database_from_a_newer_version(tmp_path):
    home = tmp_path / "home"
    assert run_app("--smoke", home=home).returncode == 0
    import sqlite3

    with sqlite3.connect(home / "mtm.sqlite3") as connection:
        connection.execute("UPDATE alembic_version SET version_num='0099_newer'")
    connection.close()
    result = run_app("--smoke", home=home)
    assert result.returncode == 1
    assert "newer version of Model Training Manager" in result.stderr


def test_import_list_show_delete_round_trip_as_json(tmp_path):
    home = tmp_path / "home"
    imported = run_app(
        "datasets", "import", str(REAL_DATA / "alpaca_en_demo.json"), "--json", home=home
    )
    assert imported.returncode == 0, imported.stderr
    dataset = json.loads(imported.stdout)
    for key in ("id", "name", "format", "rows", "invalid_rows", "created_at"):
        assert key in dataset
    assert (dataset["format"], dataset["rows"], dataset["invalid_rows"]) == ("alpaca", 999, 0)
    listed = json.loads(run_app("datasets", "list", "--json", home=home).stdout)
    assert [d["id"] for d in listed] == [dataset["id"]]
    shown = run_app("datasets", "show", dataset["id"], "--preview", "2", "--json", home=home)
    detail = json.loads(shown.stdout)
    assert len(detail["preview"]) == 2
    assert detail["preview"][0]["original"]["instruction"].startswith("Describe a process")
    assert detail["preview"][0]["normalised"]["messages"][0]["role"] == "user"
    deleted = run_app("datasets", "delete", dataset["id"], "--json", home=home)
    assert deleted.returncode == 0
    assert json.loads(run_app("datasets", "list", "--json", home=home).stdout) == []
    assert not (home / "datasets" / dataset["id"]).exists()


def test_bad_input_exits_3_with_one_sentence_on_stderr(tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "cut off\n', encoding="utf-8")
    result = run_app("datasets", "import", str(bad), home=tmp_path / "home")
    assert result.returncode == 3
    message = result.stderr.strip()
    assert "broken.jsonl" in message and "line 2" in message
    assert len(message.splitlines()) == 1
    assert json.loads(run_app("datasets", "list", "--json", home=tmp_path / "home").stdout) == []


def test_usage_errors_exit_2(tmp_path):
    assert run_app("datasets", "import", home=tmp_path / "home").returncode == 2
    assert run_app("datasets", "frobnicate", home=tmp_path / "home").returncode == 2


def test_unknown_dataset_exits_3(tmp_path):
    result = run_app("datasets", "show", "nope", home=tmp_path / "home")
    assert result.returncode == 3
    assert "nope" in result.stderr


def test_home_flag_overrides_environment(tmp_path):
    chosen = tmp_path / "chosen"
    result = run_app("--home", str(chosen), "datasets", "list", "--json", home=tmp_path / "env")
    assert result.returncode == 0
    assert (chosen / "mtm.sqlite3").exists()
    assert not (tmp_path / "env" / "mtm.sqlite3").exists()


def test_settings_set_validates_and_persists(tmp_path):
    home = tmp_path / "home"
    ok = run_app("settings", "set", "hyperparameters.epochs", "5", home=home)
    assert ok.returncode == 0, ok.stderr
    bad = run_app("settings", "set", "max_concurrent_jobs", "0", home=home)
    assert bad.returncode == 3 and "at least 1" in bad.stderr
    shown = json.loads(run_app("settings", "show", "--json", home=home).stdout)
    assert shown["hyperparameters"]["epochs"] == 5
    assert shown["max_concurrent_jobs"] == 1


def test_every_core_package_is_covered_by_the_torch_contract():
    """New packages under app/ must be added to the contract, or torch could leak into them."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    contract = next(
        c for c in config["tool"]["importlinter"]["contracts"] if "torch" in c["forbidden_modules"]
    )
    covered = set(contract["source_modules"])
    packages = {
        f"app.{p.stem if p.is_file() else p.name}"
        for p in (REPO_ROOT / "app").iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.name != "__init__.py"
    }
    missing = packages - covered - {"app.training"}
    assert not missing, f"add {sorted(missing)} to the torch contract in pyproject.toml"


@pytest.mark.parametrize("module", ["app.cli", "app.context", "app.datasets.importer"])
def test_core_modules_import_without_qt_widgets(module):
    code = (
        f"import sys, {module}; "
        "bad = [m for m in ('PySide6.QtWidgets', 'PySide6.QtGui', 'torch') if m in sys.modules]; "
        "print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_mtm_is_installed_as_a_command(tmp_path):
    mtm = Path(sys.executable).with_name("mtm")
    assert mtm.exists(), "make setup installs the package, which provides `mtm`"
    env = {**os.environ, "MTM_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [str(mtm), "datasets", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
