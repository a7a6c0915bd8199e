"""The app's icon, built from the PNG sizes shipped in resources/icons."""

from __future__ import annotations

from PySide6.QtGui import QIcon

from app.paths import resource_path

ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def app_icon() -> QIcon:
    icon = QIcon()
    for size in ICON_SIZES:
        icon.addFile(str(resource_path(f"icons/app-{size}.png")))
    return icon
