"""Datasets: reading files, detecting their format, normalising records, statistics, splits."""

from app.datasets.formats import (
    FORMATS,
    RecordError,
    detect_format,
    normalise,
    suggest_mapping,
)
from app.datasets.importer import (
    ImportCancelled,
    ImportOptions,
    ImportProgress,
    Inspection,
    import_dataset,
    inspect_file,
)
from app.datasets.preview import RecordPager
from app.datasets.readers import RawRecord, UnreadableRecord
from app.datasets.repository import (
    DatasetFiles,
    cleanup_staging,
    dataset_files,
    delete_dataset,
    get_dataset,
    list_datasets,
    rename_dataset,
    set_split,
)

__all__ = [
    "FORMATS",
    "DatasetFiles",
    "ImportCancelled",
    "ImportOptions",
    "ImportProgress",
    "Inspection",
    "RawRecord",
    "RecordError",
    "RecordPager",
    "UnreadableRecord",
    "cleanup_staging",
    "dataset_files",
    "delete_dataset",
    "detect_format",
    "get_dataset",
    "import_dataset",
    "inspect_file",
    "list_datasets",
    "normalise",
    "rename_dataset",
    "set_split",
    "suggest_mapping",
]
