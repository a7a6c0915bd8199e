"""Jobs: the validated spec a training run starts from (its lifecycle and queue come later)."""

from app.jobs.spec import (
    SPEC_FILE,
    DatasetSource,
    OutputOptions,
    TrainingHyperparameters,
    TrainingSpec,
    load_spec,
    write_spec,
)

__all__ = [
    "SPEC_FILE",
    "DatasetSource",
    "OutputOptions",
    "TrainingHyperparameters",
    "TrainingSpec",
    "load_spec",
    "write_spec",
]
