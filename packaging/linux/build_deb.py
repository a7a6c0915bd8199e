"""The Linux installers of a one-folder bundle: a .deb (dpkg-deb) and a .tar.gz.

The .deb puts the app in /opt/model-training-manager, a launcher in /usr/bin, a .desktop entry
in /usr/share/applications and the icons in the hicolor theme. dpkg's file triggers (of
desktop-file-utils and hicolor-icon-theme) refresh the menus and icon caches, so the package
needs no maintainer scripts.

    python packaging/linux/build_deb.py BUNDLE_DIR OUT_DIR --version 0.1.0 [--build full|gui]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PACKAGE = "model-training-manager"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
# What the bundled Qt needs from the system (the same list as the Makefile's system-packages).
DEPENDS = (
    "libc6, libegl1, libgl1, libxkbcommon0, libfontconfig1, libglib2.0-0, libdbus-1-3, "
    "libxcb-cursor0, libxkbcommon-x11-0, libxcb-icccm4, libxcb-keysyms1, libxcb-shape0"
)


def package_name(build: str) -> str:
    return PACKAGE if build == "full" else f"{PACKAGE}-gui"


def architecture() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def control_file(build: str, version: str, arch: str, installed_kib: int) -> str:
    name = package_name(build)
    other = package_name("gui" if build == "full" else "full")
    what = (
        "the window, the mtm command line and the trainer (PyTorch on the CPU, transformers, peft)"
        if build == "full"
        else "the window and the mtm command line; training needs the full build"
    )
    return (
        f"Package: {name}\n"
        f"Version: {version}\n"
        f"Architecture: {arch}\n"
        "Maintainer: Model Training Manager developers <noreply@example.invalid>\n"
        f"Installed-Size: {installed_kib}\n"
        f"Depends: {DEPENDS}\n"
        # Both builds install into /opt/model-training-manager: one at a time.
        f"Conflicts: {other}\n"
        f"Replaces: {other}\n"
        "Section: science\n"
        "Priority: optional\n"
        "Description: Fine-tune language models on your own machine\n"
        + textwrap.fill(
            "Model Training Manager imports datasets, runs LoRA and full fine-tunes and "
            f"publishes the results to Ollama. This package holds {what}.",
            width=79,
            initial_indent=" ",
            subsequent_indent=" ",
        )
        + "\n"
    )


def stage(bundle: Path, root: Path, build: str, version: str, arch: str) -> None:
    """Lay the package's files out under `root` as they will be installed."""
    if root.exists():
        shutil.rmtree(root)
    app_dir = root / "opt" / PACKAGE
    shutil.copytree(bundle, app_dir, symlinks=True)
    launcher = root / "usr" / "bin" / PACKAGE
    launcher.parent.mkdir(parents=True)
    shutil.copyfile(HERE / "launcher.sh", launcher)
    launcher.chmod(0o755)
    applications = root / "usr" / "share" / "applications"
    applications.mkdir(parents=True)
    shutil.copyfile(HERE / f"{PACKAGE}.desktop", applications / f"{PACKAGE}.desktop")
    icons = root / "usr" / "share" / "icons" / "hicolor"
    for size in ICON_SIZES:
        target = icons / f"{size}x{size}" / "apps" / f"{PACKAGE}.png"
        target.parent.mkdir(parents=True)
        shutil.copyfile(ROOT / "resources" / "icons" / f"app-{size}.png", target)
    scalable = icons / "scalable" / "apps" / f"{PACKAGE}.svg"
    scalable.parent.mkdir(parents=True)
    shutil.copyfile(ROOT / "resources" / "icons" / "app.svg", scalable)
    for path in root.rglob("*"):  # dpkg-deb refuses group- or world-writable control files
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    debian = root / "DEBIAN"
    debian.mkdir()
    installed_kib = folder_size(root) // 1024
    (debian / "control").write_text(control_file(build, version, arch, installed_kib))


def build_deb(bundle: Path, out: Path, work: Path, build: str, version: str) -> Path:
    arch = architecture()
    root = work / f"deb-{build}"
    stage(bundle, root, build, version, arch)
    deb = out / f"{package_name(build)}_{version}_{arch}.deb"
    # gzip rather than dpkg's default xz: xz takes minutes on a gigabyte and saves little on
    # shared libraries that are already dense.
    subprocess.run(
        ["dpkg-deb", "--build", "--root-owner-group", "-Zgzip", "-z6", str(root), str(deb)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(root)
    return deb


def build_tarball(bundle: Path, out: Path, build: str, version: str) -> Path:
    suffix = "" if build == "full" else "-gui"
    machine = os.uname().machine
    tarball = out / f"{PACKAGE}{suffix}-{version}-linux-{machine}.tar.gz"
    with tarfile.open(tarball, "w:gz", compresslevel=6) as archive:
        archive.add(bundle, arcname=bundle.name)
    return tarball


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the one-folder app (dist/<build>/<name>)")
    parser.add_argument("out", type=Path, help="where the .deb and .tar.gz go")
    parser.add_argument("--version", required=True)
    parser.add_argument("--build", choices=["full", "gui"], default="full")
    parser.add_argument("--work", type=Path, default=ROOT / "build", help="staging folder")
    options = parser.parse_args(argv)
    if shutil.which("dpkg-deb") is None:
        print("dpkg-deb is missing: install dpkg to build the .deb", file=sys.stderr)
        return 1
    options.out.mkdir(parents=True, exist_ok=True)
    for made in (
        build_deb(options.bundle, options.out, options.work, options.build, options.version),
        build_tarball(options.bundle, options.out, options.build, options.version),
    ):
        print(made)
    return 0


if __name__ == "__main__":
    sys.exit(main())
