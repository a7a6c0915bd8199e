"""Build the one-folder app for this OS, then its installers, into dist/ (`make package` runs it).

    python packaging/build.py [--build full|gui] [--no-installers]

  dist/<build>/Model Training Manager/        the one-folder app (PyInstaller, build.spec)
  Linux:   dist/model-training-manager[-gui]_<version>_<arch>.deb and a .tar.gz of the folder
  macOS:   dist/<build>/Model Training Manager.app and dist/Model-Training-Manager-<version>.dmg
  Windows: dist/Model-Training-Manager-<version>-setup.exe (Inno Setup's iscc must be on PATH)

PyInstaller's work folder build/<build>/ is kept between runs, so a rebuild reuses its cache.
The last line printed is a JSON summary (the paths made and their sizes in bytes), also
written to dist/<build>/build-summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import version as package_version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "Model Training Manager"


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def freeze(build: str, dist: Path, work: Path) -> Path:
    """Run PyInstaller on build.spec; return the one-folder app."""
    env = {**os.environ, "MTM_BUILD": build}
    command = [
        sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
        "--distpath", str(dist / build), "--workpath", str(work / build), str(ROOT / "build.spec"),
    ]  # fmt: skip
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    return dist / build / APP_NAME


def windows_icon(work: Path) -> Path | None:
    """The setup program's .ico, made from the PNGs with Pillow (as PyInstaller does for the
    .exe); without Pillow the setup keeps Inno Setup's own icon."""
    try:
        from PIL import Image
    except ImportError:
        return None
    icon = work / "app.ico"
    work.mkdir(parents=True, exist_ok=True)
    Image.open(ROOT / "resources" / "icons" / "app-256.png").save(
        icon, sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)]
    )
    return icon


def installers(build: str, bundle: Path, dist: Path, work: Path, version: str) -> list[Path]:
    if sys.platform.startswith("linux"):
        out = subprocess.run(
            [
                sys.executable, str(ROOT / "packaging" / "linux" / "build_deb.py"), str(bundle),
                str(dist), "--version", version, "--build", build, "--work", str(work),
            ],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        return [Path(line) for line in out.split("\n") if line.strip()]
    if sys.platform == "darwin":
        dmg = dist / f"Model-Training-Manager-{version}{'' if build == 'full' else '-gui'}.dmg"
        app = dist / build / f"{APP_NAME}.app"
        script = ROOT / "packaging" / "macos" / "make-dmg.sh"
        subprocess.run(["bash", str(script), str(app), str(dmg), version], check=True)
        return [dmg]
    if sys.platform == "win32":
        iscc = shutil.which("iscc") or shutil.which("ISCC")
        if iscc is None:
            print("Inno Setup's iscc is not on PATH: no installer made", file=sys.stderr)
            return []
        script = ROOT / "packaging" / "windows" / "model-training-manager.iss"
        defines = [f"/DAppVersion={version}", f"/DBuild={build}", f"/DSourceDir={bundle}"]
        icon = windows_icon(work)
        if icon is not None:
            defines.append(f"/DIconFile={icon}")
        subprocess.run([iscc, *defines, f"/O{dist}", str(script)], check=True)
        return sorted(dist.glob(f"Model-Training-Manager-{version}*-setup.exe"))
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", choices=["full", "gui"], default="full")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--work", type=Path, default=ROOT / "build")
    parser.add_argument("--no-installers", action="store_true", help="the one-folder app only")
    options = parser.parse_args(argv)
    version = package_version("model-training-manager")
    started = time.monotonic()
    bundle = freeze(options.build, options.dist, options.work)
    frozen_s = time.monotonic() - started
    made = (
        []
        if options.no_installers
        else installers(options.build, bundle, options.dist, options.work, version)
    )
    summary = {
        "build": options.build,
        "version": version,
        "bundle": str(bundle),
        "bundle_bytes": folder_size(bundle),
        "installers": {str(path): path.stat().st_size for path in made},
        "freeze_s": round(frozen_s, 1),
        "total_s": round(time.monotonic() - started, 1),
    }
    # Kept beside the bundle, so that a test run can reuse a build (MTM_REUSE_BUNDLES=1).
    (options.dist / options.build / "build-summary.json").write_text(json.dumps(summary))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
