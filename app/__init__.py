"""Model Training Manager: the core (no widgets)."""

from importlib import metadata

APP_NAME = "Model Training Manager"
APP_ID = "model-training-manager"


def _read_version() -> str:
    try:
        return metadata.version(APP_ID)
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+source"


__version__ = _read_version()
