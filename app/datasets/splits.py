"""The seeded train/validation split of a dataset, kept in its `split.json`."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import orjson

from app.errors import BadInputError


def validation_indices(rows: int, fraction: float, seed: int) -> list[int]:
    """The sorted record indices held out for validation: the same for the same seed.

    At least one record is held out when `fraction` > 0 and there are two records or more, and
    at least one is always left for training.
    """
    check_fraction(fraction)
    if fraction == 0 or rows < 2:
        return []
    count = min(max(1, round(rows * fraction)), rows - 1)
    return sorted(random.Random(seed).sample(range(rows), count))


def check_fraction(fraction: float) -> None:
    if not 0 <= fraction < 1:
        raise BadInputError(
            f"The validation fraction {fraction} is out of range; choose a value from 0 to 0.99."
        )


def split_document(rows: int, fraction: float, seed: int) -> dict[str, Any]:
    """The content of `split.json`."""
    indices = validation_indices(rows, fraction, seed)
    return {"seed": seed, "validation_fraction": fraction, "validation_indices": indices}


def write_split(path: Path, document: dict[str, Any]) -> None:
    """Write `split.json` atomically, so a reader never sees half a file."""
    handle, temporary = tempfile.mkstemp(prefix=".split-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(orjson.dumps(document))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
