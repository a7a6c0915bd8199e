"""Which build of the app this is: a source checkout, the full bundle or the GUI-only bundle.

The GUI-only bundle is frozen without the training stack, so the window asks here before it
offers to train. Looking the stack up (find_spec) does not import it: the window still opens
without torch in memory.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from functools import cache
from pathlib import Path

TRAINING_MODULES = ("torch", "transformers", "peft")
# build.spec writes this file into the bundle, beside the frozen app package.
_MARKER = Path(__file__).with_name("build.json")
GUI_ONLY_NOTE = (
    "Training on this machine needs the full build of Model Training Manager; this is the "
    "GUI-only build. Install the full build to train here, or run the job on a Ray cluster "
    "(Settings, Clusters)."
)


@cache
def training_available() -> bool:
    """Whether this build can start a trainer: torch, transformers and peft are all present."""
    return all(importlib.util.find_spec(name) is not None for name in TRAINING_MODULES)


def build_name() -> str:
    """`full` or `gui` for a frozen bundle (as build.spec recorded it), `source` otherwise."""
    if not getattr(sys, "frozen", False):
        return "source"
    try:
        recorded = json.loads(_MARKER.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "full" if training_available() else "gui"
    return str(recorded.get("build", "unknown"))
