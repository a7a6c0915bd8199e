"""The frozen app, as users get it: the PyInstaller bundles, the .deb and the .tar.gz (Linux).

Each bundle is built once per session into build/ and dist/ (packaging/build.py, as `make
package` does; PyInstaller's cache in build/ makes a rebuild quicker) and then run as a user
would run it: no Python, no PYTHONPATH, a fresh data folder, offscreen. CI runs these; a
developer in a hurry skips them with `make test-fast` or MTM_SKIP_PACKAGING=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REAL_DATA, REPO_ROOT
from tests.training_fixtures import tiny_model  # noqa: F401  (fixture)

FROZEN_MARKS = (
    pytest.mark.packaging,
    pytest.mark.skipif(
        os.environ.get("MTM_SKIP_PACKAGING") == "1",
        reason="MTM_SKIP_PACKAGING=1: the packaging checks are skipped (CI runs them)",
    ),
    pytest.mark.skipif(
        not sys.platform.startswith("linux"),
        reason="the packaging checks run on Linux; the CI workflow builds the other installers",
    ),
)

APP_NAME = "Model Training Manager"
GUI_BUDGET_BYTES = 200 * 10**6
FULL_BUDGET_BYTES = int(1.3 * 10**9)
BUILD_TIMEOUT_S = 1500


def frozen(test: Any) -> Any:
    """Marks a test that needs a bundle: `packaging`, skipped off Linux and on request."""
    for mark in FROZEN_MARKS:
        test = mark(test)
    return test


def build(kind: str) -> dict[str, Any]:
    """packaging/build.py for `kind`; its JSON summary (paths and sizes). MTM_REUSE_BUNDLES=1
    takes the bundles already in dist/ instead, for a developer rerunning these checks."""
    previous = REPO_ROOT / "dist" / kind / "build-summary.json"
    if os.environ.get("MTM_REUSE_BUNDLES") == "1" and previous.is_file():
        reused: dict[str, Any] = json.loads(previous.read_text())
        return reused
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "packaging" / "build.py"), "--build", kind],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


@pytest.fixture(scope="session")
def full_build() -> dict[str, Any]:
    return build("full")


@pytest.fixture(scope="session")
def gui_build() -> dict[str, Any]:
    return build("gui")


def frozen_env(home: Path) -> dict[str, str]:
    """What a user's session would have: none of this checkout's Python settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "MTM_"))
    }
    env.update(QT_QPA_PLATFORM="offscreen", MTM_HOME=str(home), HF_HUB_OFFLINE="1")
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    return env


def run_frozen(
    command: list[str], home: Path, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,  # not the checkout: nothing may be imported from the source tree
        env=frozen_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def executable(summary: dict[str, Any]) -> Path:
    return Path(summary["bundle"]) / APP_NAME


def installer(summary: dict[str, Any], suffix: str) -> Path:
    return next(Path(p) for p in summary["installers"] if p.endswith(suffix))


def assert_smoke(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["event"] == "first_paint"
    assert report["heavy_modules"] == []
    assert result.stderr.strip() == ""  # no warnings, no missing-module tracebacks


@frozen
def test_full_bundle_runs_smoke_offscreen_with_nothing_on_stderr(full_build, tmp_path):
    result = run_frozen([str(executable(full_build)), "--smoke"], tmp_path / "home", tmp_path)
    assert_smoke(result)
    assert (tmp_path / "home" / "mtm.sqlite3").is_file()  # the migrations ran frozen


@frozen
def test_the_frozen_hardware_probe_reports_torch(full_build, tmp_path):
    """The welcome panel and About box ask the executable itself, as `--run-hardware`."""
    result = run_frozen(
        [str(executable(full_build)), "--run-hardware"], tmp_path / "home", tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["torch"] and report["cpu_cores"] >= 1


@frozen
def test_full_bundle_carries_its_resources_and_the_training_stack(full_build):
    internal = Path(full_build["bundle"]) / "_internal"
    for size in (16, 48, 256, 512):
        assert (internal / "resources" / "icons" / f"app-{size}.png").is_file()
    assert json.loads((internal / "app" / "build.json").read_text())["build"] == "full"
    for distribution in ("transformers", "peft", "huggingface_hub", "torch", "tokenizers"):
        assert list(internal.glob(f"{distribution}-*.dist-info")), distribution
    assert (internal / "huggingface_hub" / "templates" / "modelcard_template.md").is_file()
    # The welcome panel's sample and the user guide of Help → User guide.
    assert (internal / "resources" / "samples" / "getting-started.jsonl").is_file()
    assert (internal / "README.md").is_file()
    assert not (internal / "PySide6" / "Qt" / "lib" / "libQt6WebEngineCore.so.6").exists()
    assert full_build["bundle_bytes"] < FULL_BUDGET_BYTES, full_build["bundle_bytes"]


def _elf_strip() -> Any:
    """packaging/elf_strip.py, loaded by path (`packaging` is also the name of a PyPI library)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "elf_strip", REPO_ROOT / "packaging" / "elf_strip.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and shutil.which("strip") and shutil.which("readelf")),
    reason="stripping is for Linux builds with binutils",
)
def test_build_strips_plain_libraries_and_leaves_what_auditwheel_patched(tmp_path):
    import ctypes

    import numpy
    import sqlalchemy

    elf_strip = _elf_strip()
    plain = next((Path(sqlalchemy.__file__).parent / "engine").glob("_result_cy*.so"))
    stripped = tmp_path / plain.name
    assert elf_strip.strip_copy(plain, stripped)
    assert stripped.stat().st_size < plain.stat().st_size
    assert elf_strip.load_segments(stripped) == elf_strip.load_segments(plain)
    ctypes.CDLL(str(stripped))  # it still loads
    # numpy's own modules point their RPATH at numpy.libs, and stripping OpenBLAS (which is
    # in a .libs folder and is skipped for that alone) would cut its segments: refused.
    core = next((Path(numpy.__file__).parent / "_core").glob("_multiarray_umath*.so"))
    openblas = next((Path(numpy.__file__).parent.parent / "numpy.libs").glob("libscipy_openblas*"))
    for patched in (core, openblas):
        assert not elf_strip.strip_copy(patched, tmp_path / patched.name)
        assert not (tmp_path / patched.name).exists()
    assert elf_strip.vendored(f"numpy.libs/{openblas.name}")
    assert not elf_strip.vendored(f"numpy/_core/{core.name}")


def test_app_code_never_reads_meipass():
    """Resources go through app.paths.resource_path, in a checkout and frozen alike."""
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for folder in ("app", "ui")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if "_MEIPASS" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


@frozen
def test_frozen_cli_imports_a_real_dataset_and_trains_a_lora_job(
    full_build,
    tmp_path,
    tiny_model,  # noqa: F811
):
    exe, home = str(executable(full_build)), tmp_path / "home"

    def mtm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = run_frozen([exe, *args], home, tmp_path, timeout)
        assert result.returncode == 0, f"{args}: {result.stderr[-4000:]}"
        return result

    dataset = json.loads(
        mtm("datasets", "import", str(REAL_DATA / "identity.json"), "--json").stdout
    )
    assert (dataset["format"], dataset["rows"]) == ("alpaca", 91)
    created = mtm(
        "jobs", "create", "--dataset", dataset["id"], "--base-model", str(tiny_model),
        "--method", "lora", "--epochs", "1", "--batch-size", "4", "--max-seq-length", "64",
        "--max-steps", "4", "--save-steps", "1000", "--json",
    )  # fmt: skip
    job = json.loads(created.stdout)
    # The worker starts the frozen executable itself as the trainer: no Python is involved.
    mtm("worker", "run", "--until-idle", timeout=900)
    shown = json.loads(mtm("jobs", "show", job["id"], "--json").stdout)
    assert shown["status"] == "completed", shown["error"]
    adapter = Path(shown["job_dir"]) / "adapter"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"


@frozen
def test_deb_unpacks_and_its_launcher_starts_the_app(full_build, tmp_path):
    deb = installer(full_build, ".deb")
    fields = subprocess.run(
        ["dpkg-deb", "--field", str(deb), "Package", "Version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Package: model-training-manager\n" in fields
    assert f"Version: {full_build['version']}" in fields
    root = tmp_path / "root"
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    assert (root / "usr" / "share" / "applications" / "model-training-manager.desktop").is_file()
    for size in (16, 32, 48, 128, 256, 512):
        icon = f"usr/share/icons/hicolor/{size}x{size}/apps/model-training-manager.png"
        assert (root / icon).is_file(), icon
    assert (root / "opt" / "model-training-manager" / APP_NAME).is_file()
    launcher = root / "usr" / "bin" / "model-training-manager"
    result = run_frozen([str(launcher), "--smoke"], tmp_path / "home", tmp_path)
    assert_smoke(result)


@frozen
def test_tarball_holds_the_one_folder_app(full_build):
    import tarfile

    with tarfile.open(installer(full_build, ".tar.gz")) as archive:
        names = set(archive.getnames())
    assert f"{APP_NAME}/{APP_NAME}" in names
    assert f"{APP_NAME}/_internal/resources/icons/app-256.png" in names


@frozen
def test_gui_only_bundle_has_no_training_stack_and_still_starts(gui_build, full_build, tmp_path):
    internal = Path(gui_build["bundle"]) / "_internal"
    assert not (internal / "torch").exists()
    assert not list(internal.glob("transformers*"))
    assert not list(internal.glob("pyarrow*"))  # Parquet needs the full build
    assert json.loads((internal / "app" / "build.json").read_text())["build"] == "gui"
    assert gui_build["bundle_bytes"] * 2 < full_build["bundle_bytes"]
    home = tmp_path / "home"
    assert_smoke(run_frozen([str(executable(gui_build)), "--smoke"], home, tmp_path))
    jsonl = REAL_DATA / "v1_sft_demo.jsonl"
    imported = run_frozen(
        [str(executable(gui_build)), "datasets", "import", str(jsonl), "--json"], home, tmp_path
    )
    assert imported.returncode == 0, imported.stderr
    dataset = json.loads(imported.stdout)
    assert (dataset["format"], dataset["container"], dataset["rows"]) == ("messages", "jsonl", 500)


@frozen
def test_both_bundles_carry_the_training_code_a_cluster_job_runs(gui_build, full_build):
    """The Python files a Ray job's working_dir needs, as the checkout would send them."""
    from app.executors.bundle import FROZEN_CODE, SOURCE_ROOT, training_sources

    expected = training_sources(SOURCE_ROOT)
    assert "app/training/__main__.py" in expected
    for summary in (gui_build, full_build):
        code = Path(summary["bundle"]) / "_internal" / "resources" / FROZEN_CODE
        assert training_sources(code) == expected


@frozen
def test_the_gui_only_bundle_sends_a_job_to_a_cluster(gui_build, tmp_path):
    """No trainer of its own, but a cluster job goes out from the frozen GUI-only build's CLI:
    the dataset to the storage, and the training code it carries as the job's working_dir."""
    import io
    import zipfile

    from app.executors.bundle import SOURCE_ROOT, training_sources
    from tests.ray_head import FakeHead, serve_over_http

    exe, home, storage = str(executable(gui_build)), tmp_path / "home", tmp_path / "shared"
    storage.mkdir()

    def mtm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = run_frozen([exe, *args], home, tmp_path, timeout)
        assert result.returncode == 0, f"{args}: {result.stderr[-4000:]}"
        return result

    with serve_over_http(FakeHead()) as served:
        mtm("clusters", "add", "lab", "--url", served.url, "--storage", str(storage))
        jsonl = str(REAL_DATA / "v1_sft_demo.jsonl")
        dataset = json.loads(mtm("datasets", "import", jsonl, "--json").stdout)
        created = mtm(
            "jobs", "create", "--dataset", dataset["id"], "--base-model", "org/model",
            "--target", "lab", "--json",
        )  # fmt: skip
        job = json.loads(created.stdout)
        # The stand-in head never runs it: following the job then fails, and the worker stops.
        run_frozen([exe, "worker", "run", "--until-idle"], home, tmp_path, timeout=300)
        submitted = [
            json.loads(r.content)
            for r in served.head.requests
            if r.method == "POST" and r.url.path == "/api/jobs/"
        ]
        packages = dict(served.head.packages)
    assert [body["submission_id"] for body in submitted] == [job["id"]]
    (package,) = packages.values()
    names = set(zipfile.ZipFile(io.BytesIO(package)).namelist())
    assert set(training_sources(SOURCE_ROOT)) <= names
    assert (storage / "jobs" / job["id"]).is_dir()  # the records and spec went to the storage


@frozen
def test_gui_only_bundle_refuses_parquet_in_one_sentence(gui_build, tmp_path):
    """Without pyarrow the import says what is wrong and what to do, and keeps nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "facts.parquet"
    rows = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(12)]
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    home = tmp_path / "home"
    command = [str(executable(gui_build)), "datasets", "import", str(parquet), "--json"]
    refused = run_frozen(command, home, tmp_path)
    assert refused.returncode == 3, refused.stderr
    assert refused.stderr.strip() == (
        "facts.parquet is a Parquet file, and this build of Model Training Manager cannot read "
        "Parquet; export it as JSON Lines or CSV, or use the full build."
    )
    assert list((home / "datasets").iterdir()) == []


# Run inside the frozen GUI-only build as "pyarrow" (which that build leaves out): the loss chart
# with two jobs, numpy's OpenBLAS and pydantic. What it finds, or its traceback, goes to REPORT.
_CHART_PROBE = """
import json, sys, traceback

def probe():
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication(["probe"])
    import numpy as np, pydantic
    from ui.job_models import Curves
    from ui.loss_chart import LossChart
    chart = LossChart()
    chart.resize(480, 320)
    first = Curves()
    for step in range(50):
        first.add(step, 2.0 / (step + 1), 2.5 / (step + 1) if step % 5 == 0 else None)
    chart.set_series([("a", "job a", first), ("b", "job b", Curves([1, 2], [1.0, 0.5]))])
    chart.append("a", 51, 0.03, None)
    chart.on_redraw_timer_timeout()
    image = chart.grab().toImage()
    matrix = np.random.default_rng(1).random((200, 200))
    class Model(pydantic.BaseModel):
        n: int
    return {
        "colours": len({image.pixel(x, y) for x in range(0, 480, 4) for y in range(0, 320, 4)}),
        "pyqtgraph": "pyqtgraph" in sys.modules,
        "blas": bool(np.allclose(matrix @ np.linalg.inv(matrix), np.eye(200), atol=1e-6)),
        "pydantic": Model.model_validate({"n": "3"}).n,
    }

try:
    found = probe()
except BaseException:
    found = {"error": traceback.format_exc()}
with open(REPORT, "w") as report:
    json.dump(found, report)
raise ImportError("the chart probe is not pyarrow")
"""


@frozen
def test_gui_only_bundle_draws_the_loss_chart(gui_build, tmp_path):
    """pyqtgraph, numpy and the OpenGL stand-ins (packaging/rthooks), frozen at -OO.

    The window's smoke run never builds the chart, so this runs code inside the bundle: a twin
    folder links everything in _internal but adds a "pyarrow" package, which the import of a
    Parquet file then loads from the folder (the build has no pyarrow of its own)."""
    bundle = Path(gui_build["bundle"])
    twin = tmp_path / "twin"
    (twin / "_internal" / "pyarrow").mkdir(parents=True)
    for entry in (bundle / "_internal").iterdir():
        (twin / "_internal" / entry.name).symlink_to(entry)
    exe = twin / APP_NAME
    exe.write_bytes(executable(gui_build).read_bytes())  # a copy: a link would run the original
    exe.chmod(0o755)
    report = tmp_path / "chart.json"
    probe = f"REPORT = {str(report)!r}\n{_CHART_PROBE}"
    (twin / "_internal" / "pyarrow" / "__init__.py").write_text(probe, encoding="utf-8")
    parquet = tmp_path / "any.parquet"
    parquet.write_bytes(b"PAR1" + b"\x00" * 8 + b"PAR1")
    ran = run_frozen([str(exe), "datasets", "import", str(parquet)], tmp_path / "home", tmp_path)
    assert ran.returncode == 3 and "cannot read Parquet" in ran.stderr, ran.stderr
    found = json.loads(report.read_text())
    assert "error" not in found, found.get("error")
    assert found["pyqtgraph"] and found["blas"] and found["pydantic"] == 3, found
    assert found["colours"] > 20, found  # curves, legend and axes, not a blank widget


@frozen
def test_gui_only_bundle_is_within_its_size_budget(gui_build):
    assert gui_build["bundle_bytes"] < GUI_BUDGET_BYTES, gui_build["bundle_bytes"]


def test_the_new_job_dialog_of_the_gui_only_build_says_training_needs_the_full_build(
    qtbot, context, tmp_path, monkeypatch
):
    """Frozen without torch, the dialog says why it cannot queue, and its Queue button stays
    off even with the form complete (here the check is made to answer as that build does)."""
    import ui.new_job_dialog as dialog_module
    from app.datasets.importer import ImportOptions, import_dataset
    from ui.main_window import MainWindow

    monkeypatch.setattr(dialog_module, "training_available", lambda: False)
    import_dataset(
        context.database, context.home, REAL_DATA / "identity.json", ImportOptions(name="ids")
    )
    window = MainWindow(context, start_workers=False)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    tab = window.jobs_tab
    qtbot.waitUntil(lambda: tab.loaded, timeout=10_000)
    window.tabs.setCurrentWidget(tab)
    tab.new_button.click()
    dialog = tab.dialog
    assert isinstance(dialog, dialog_module.NewJobDialog)
    qtbot.waitUntil(lambda: dialog.loaded, timeout=10_000)
    assert dialog.build_note.isVisible()
    assert dialog.build_note.text().startswith(
        "Training on this machine needs the full build of Model Training Manager; this is the "
        "GUI-only build."
    )
    dialog.base_model_combo.setCurrentText(str(tmp_path))
    dialog.on_form_changed()
    assert dialog.dataset_id is not None and dialog.validate() == {}
    assert not dialog.create_button.isEnabled()
    dialog.reject()
    assert window.runner.shutdown(), "background work did not finish"
