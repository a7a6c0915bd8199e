"""`python -m app --run-merge --job-dir DIR`: fold a finished job's LoRA adapter into its base
and write merged/ (full weights in safetensors, with the tokenizer).

Publishing runs this when Ollama cannot take the adapter itself (a base architecture its
converter does not know, or a server that no longer creates adapter models). It is a subprocess
because it loads torch and the whole base model. A known failure prints one sentence on stderr
and exits 3; success exits 0 with merged/ complete (it is written beside and renamed in).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.errors import KnownError
from app.jobs.spec import SPEC_FILE, load_spec
from app.training.base_model import model_cache_root, resolve_base
from app.training.outputs import ADAPTER_DIR, merge_saved_adapter

EXIT_KNOWN = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app --run-merge", description=__doc__)
    parser.add_argument("--job-dir", required=True, help="the finished job's folder")
    job_dir = Path(parser.parse_args(argv).job_dir)
    try:
        merge(job_dir)
    except KnownError as error:
        print(error.message, file=sys.stderr)
        return EXIT_KNOWN
    return 0


def merge(job_dir: Path) -> None:
    if not (job_dir / ADAPTER_DIR / "adapter_config.json").is_file():
        raise KnownError(f"Job folder {job_dir} has no adapter to merge; train the job first.")
    spec = load_spec(job_dir / SPEC_FILE)
    source = resolve_base(spec.base_model, model_cache_root(spec.model_cache))
    merge_saved_adapter(job_dir, source)
