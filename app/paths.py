"""Where the app keeps its data, and how it finds its bundled resources.

The data folder is chosen, in order, by `--home DIR`, the `MTM_HOME` environment variable, or the
per-user data directory that platformdirs names for this OS. Only its user may read it.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

HOME_ENV = "MTM_HOME"
_PRIVATE_DIR_MODE = stat.S_IRWXU  # 0o700: datasets and logs are the user's own


@dataclass(frozen=True)
class DataHome:
    """The folders inside one data folder."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "mtm.sqlite3"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.datasets / dataset_id

    def ensure(self) -> DataHome:
        """Create the folder tree (private to the user) and return self."""
        for folder in (self.root, self.datasets, self.jobs, self.logs, self.backups):
            make_private_dir(folder)
        return self


def make_private_dir(folder: Path) -> None:
    """Create `folder` (and parents) and restrict it to its owner."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, _PRIVATE_DIR_MODE)


def default_data_root() -> Path:
    from platformdirs import user_data_path

    return user_data_path("model-training-manager", appauthor=False)


def resolve_data_home(explicit: str | os.PathLike[str] | None = None) -> DataHome:
    """The data folder: `explicit` if given, else $MTM_HOME, else the platform default."""
    if explicit:
        root = Path(explicit)
    elif os.environ.get(HOME_ENV):
        root = Path(os.environ[HOME_ENV])
    else:
        root = default_data_root()
    return DataHome(root.expanduser().resolve())


def resource_path(name: str) -> Path:
    """A file shipped in the `resources` package, found alike in a source tree and a build."""
    traversable = resources.files("resources").joinpath(name)
    return Path(str(traversable))


def readme_path() -> Path | None:
    """README.md (the user guide) beside the resources package: the source tree's, or the copy a
    frozen build bundles at its root; None where it was left out (an installed wheel)."""
    candidate = Path(str(resources.files("resources"))).parent / "README.md"
    return candidate if candidate.is_file() else None


def self_command(*args: str) -> list[str]:
    """The command line that runs this app again with `args`: the frozen executable itself, or
    this Python with `-m app`. Child processes (imports, training) start through it."""
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "app", *args]
