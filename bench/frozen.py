"""The frozen bundles (`make package`, `make package-gui`): start to the first painted window,
and the sizes of the bundles and their installers. A bundle not built yet is reported as such."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from bench.common import ROOT, median

APP_NAME = "Model Training Manager"
DIST = ROOT / "dist"
BUDGETS_MB = {"gui": 200, "full": 1300}
START_BUDGET_S = 1.5


def folder_mb(folder: Path) -> float:
    files = (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return sum(p.stat().st_size for p in files) / 1e6


def frozen_first_paint(exe: Path, home: Path) -> float:
    """Seconds from spawning the frozen executable to its `first_paint` line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(QT_QPA_PLATFORM="offscreen", MTM_HOME=str(home))
    home.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(exe), "--smoke"], cwd=home, env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:
        if '"first_paint"' in line:
            elapsed = time.perf_counter() - start
            if json.loads(line).get("heavy_modules"):
                raise RuntimeError(f"heavy modules loaded before the first paint: {line}")
            break
    else:
        raise RuntimeError(f"{exe} never painted")
    process.wait(timeout=60)
    return elapsed


def installer_sizes(build: str) -> str:
    stem = "model-training-manager" + ("" if build == "full" else "-gui")
    made = [
        p
        for pattern in (f"{stem}_*.deb", f"{stem}-[0-9]*.tar.gz")
        for p in sorted(DIST.glob(pattern))
    ]
    return ", ".join(f"{p.name} {p.stat().st_size / 1e6:.0f} MB" for p in made) or "none built"


def rows(runs: int, home: Path) -> list[tuple[str, str, str, str]]:
    result: list[tuple[str, str, str, str]] = []
    for build in ("full", "gui"):
        bundle = DIST / build / APP_NAME
        exe = bundle / APP_NAME
        what = "full bundle (trainer included)" if build == "full" else "GUI-only bundle"
        if not exe.is_file():
            result.append((f"Frozen {what}", "not built", f"run make package BUILD={build}", "-"))
            continue
        folder = home / build
        frozen_first_paint(exe, folder)  # creates the database once, as the source bench does
        times = [frozen_first_paint(exe, folder) for _ in range(runs)]
        size = folder_mb(bundle)
        result += [
            (
                f"Frozen {what}: start to first painted window (`--smoke`), median of {runs}",
                f"{median(times):.3f} s (min {min(times):.3f} s)",
                f"budget {START_BUDGET_S} s",
                "pass" if median(times) < START_BUDGET_S else "FAIL",
            ),
            (
                f"Frozen {what}: size on disk",
                f"{size:.0f} MB; installers: {installer_sizes(build)}",
                f"budget {BUDGETS_MB[build]} MB",
                "pass" if size < BUDGETS_MB[build] else "FAIL",
            ),
        ]
    return result
