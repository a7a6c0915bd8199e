"""Help → User guide: the README's user guide section, opened in the system's viewer."""

from __future__ import annotations

from importlib import metadata

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QWidget

from app import APP_ID
from app.paths import readme_path
from ui.dialogs import show_error

USER_GUIDE_ANCHOR = "user-guide"  # GitHub's anchor for README.md's "## User guide"


def user_guide_url() -> QUrl | None:
    """The project's page when the package names one, else the README shipped with the app."""
    online = _project_url()
    if online:
        return QUrl(f"{online.rstrip('/')}#{USER_GUIDE_ANCHOR}")
    readme = readme_path()
    if readme is None:
        return None
    url = QUrl.fromLocalFile(str(readme))
    url.setFragment(USER_GUIDE_ANCHOR)
    return url


def open_user_guide(parent: QWidget) -> None:
    url = user_guide_url()
    if url is None:
        show_error(
            parent,
            "This installation has no copy of the user guide; read README.md in "
            "the project's source, which has the same text.",
        )
        return
    if not QDesktopServices.openUrl(url):
        show_error(
            parent,
            f"No program opened the user guide; open {url.toDisplayString()} yourself.",
        )


def _project_url() -> str | None:
    try:
        meta = metadata.metadata(APP_ID)
    except metadata.PackageNotFoundError:
        return None
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("homepage", "documentation", "source", "repository"):
            return str(url).strip()
    pages = meta.get_all("Home-page") or []
    return str(pages[0]) if pages else None
