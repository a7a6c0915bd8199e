"""Finding, renaming, re-splitting and deleting imported datasets."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.formats import quoted
from app.datasets.importer import (
    OWNER_FILE,
    RECORDS_FILE,
    SOURCE_FILE,
    SPLIT_FILE,
    STAGING_PREFIX,
    check_name,
)
from app.datasets.splits import split_document, write_split
from app.db.models import Dataset, Job
from app.db.session import Database
from app.errors import BadInputError, ConflictError, NotFoundError
from app.jobs.lifecycle import ACTIVE
from app.paths import DataHome

MIN_PREFIX_LENGTH = 4


@dataclass(frozen=True)
class DatasetFiles:
    """Where one dataset's files are."""

    folder: Path
    records: Path
    source: Path
    original: Path
    split: Path


def dataset_files(home: DataHome, dataset: Dataset) -> DatasetFiles:
    folder = home.dataset_dir(dataset.id)
    return DatasetFiles(
        folder=folder,
        records=folder / RECORDS_FILE,
        source=folder / SOURCE_FILE,
        original=folder / dataset.original_file,
        split=folder / SPLIT_FILE,
    )


def list_datasets(database: Database) -> list[Dataset]:
    """Every dataset, newest first."""
    with database.session() as session:
        query = select(Dataset).order_by(Dataset.created_at.desc(), Dataset.name)
        return list(session.scalars(query))


def get_dataset(database: Database, id_or_name: str) -> Dataset:
    """The dataset with this id, else this name, else the one whose id starts with it."""
    with database.session() as session:
        return _find(session, id_or_name)


def _find(session: Session, id_or_name: str) -> Dataset:
    key = id_or_name.strip()
    found = (
        session.get(Dataset, key)
        or session.scalars(select(Dataset).where(Dataset.name == key)).first()
    )
    if found is None and len(key) >= MIN_PREFIX_LENGTH:
        query = select(Dataset).where(Dataset.id.startswith(key.lower(), autoescape=True))
        matches = list(session.scalars(query.limit(2)))
        if len(matches) == 1:
            found = matches[0]
        elif matches:
            raise NotFoundError(
                f"More than one dataset id starts with {quoted(key)}; give more of the id "
                "(`mtm datasets list` shows them)."
            )
    if found is None:
        raise NotFoundError(
            f"There is no dataset {quoted(key)}; `mtm datasets list` shows the datasets there are."
        )
    return found


def rename_dataset(database: Database, dataset_id: str, new_name: str) -> Dataset:
    """Give the dataset a new display name; ConflictError when another one has it."""
    name = check_name(new_name)
    with database.session() as session:
        dataset = _find(session, dataset_id)
        other = session.scalars(select(Dataset).where(Dataset.name == name)).first()
        if other is not None and other.id != dataset.id:
            raise ConflictError(
                f"Another dataset is already called {quoted(name)}; choose a different name."
            )
        dataset.name = name
        return dataset


def delete_dataset(database: Database, home: DataHome, dataset_id: str) -> None:
    """Delete the row, then the folder (a folder without a row is harmless; the reverse is not)."""
    with database.session() as session:
        dataset = _find(session, dataset_id)
        _refuse_if_training(session, dataset)
        folder = home.dataset_dir(dataset.id)
        session.delete(dataset)
    shutil.rmtree(folder, ignore_errors=True)


def _refuse_if_training(session: Session, dataset: Dataset) -> None:
    query = select(Job).where(Job.dataset_id == dataset.id, Job.status.in_(list(ACTIVE)))
    job = session.scalars(query.limit(1)).first()
    if job is not None:
        raise ConflictError(
            f"The dataset '{dataset.name}' is used by the {job.status} job '{job.name}'; cancel "
            "the job or wait for it to finish, then delete the dataset."
        )


def set_split(
    database: Database, home: DataHome, dataset_id: str, validation_fraction: float, seed: int
) -> Dataset:
    """Choose a new validation split: rewrites split.json and updates the row."""
    with database.session() as session:
        dataset = _find(session, dataset_id)
        document = split_document(dataset.rows, validation_fraction, seed)
        folder = home.dataset_dir(dataset.id)
        if not folder.is_dir():
            raise BadInputError(
                f"The files of dataset '{dataset.name}' are missing; delete it and import it again."
            )
        write_split(folder / SPLIT_FILE, document)
        dataset.split_seed = seed
        dataset.validation_fraction = validation_fraction
        dataset.validation_rows = len(document["validation_indices"])
        dataset.stats = {**dataset.stats, "validation_rows": dataset.validation_rows}
        return dataset


def cleanup_staging(home: DataHome) -> int:
    """Remove staging folders left by imports that died; returns how many were removed.

    A folder whose owner process is still running (an import in another window or the CLI) is
    left alone.
    """
    if not home.datasets.is_dir():
        return 0
    removed = 0
    for folder in home.datasets.glob(f"{STAGING_PREFIX}*"):
        if folder.is_dir() and not _owner_alive(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed += not folder.exists()
    return removed


def _owner_alive(folder: Path) -> bool:
    try:
        pid = int((folder / OWNER_FILE).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return False  # os.kill would terminate the process on Windows; assume it is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
