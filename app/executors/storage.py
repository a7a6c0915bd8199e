"""The storage both this machine and a cluster reach: a shared folder or an S3-compatible bucket.

The Ray head holds no datasets and hands back no files (RAY_JOBS.md: "no endpoint to download
artifacts"), so a remote job's folder lives here: `jobs/<id>/` with its spec, its dataset under
`dataset/`, and what the trainer writes (checkpoints, adapter, merged weights, events). Its
spec's paths are relative to that folder, so it reads the same wherever the folder is mounted.
Checkpoints stay in storage, where a resumed job finds them; the results are copied back into
the job's local folder when it ends.

A bucket is `s3://bucket/prefix`; its endpoint comes from AWS_ENDPOINT_URL and its credentials
from the usual AWS variables or files. boto3 is an optional dependency (the `s3` extra), loaded
only when a bucket is used.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from app.executors.errors import BadClusterError, StorageError
from app.jobs.spec import SPEC_FILE, DatasetSource, TrainingSpec

JOBS = "jobs"
DATASET_DIR = "dataset"
RECORDS_FILE = "records.jsonl"
SPLIT_FILE = "split.json"
# What comes back into the local job folder; checkpoints stay in storage, for a resume.
RESULTS = ("adapter", "merged", "summary.json", "events.jsonl")
# What a retry (a start over) removes from the job's folder in storage.
RUN_OUTPUTS = ("checkpoints", "adapter", "merged", "summary.json", "events.jsonl")


def remote_spec(spec: TrainingSpec, threads: int | None = None) -> TrainingSpec:
    """The spec as the job reads it in storage: its dataset beside it, no path of this machine."""
    base = Path(spec.base_model).expanduser()
    if base.is_absolute() or base.exists():
        raise BadClusterError(
            f"The base model {spec.base_model} is a file on this machine, which the cluster "
            "cannot read; give a Hugging Face id for a job on a cluster."
        )
    split = f"{DATASET_DIR}/{SPLIT_FILE}" if spec.dataset.split else None
    dataset = DatasetSource(records=Path(f"{DATASET_DIR}/{RECORDS_FILE}"), split=split)
    # model_cache None: the trainer caches converted bases in its own data folder there.
    changes: dict[str, Any] = {"dataset": dataset, "model_cache": None}
    if threads is not None:
        changes["threads"] = threads
    return spec.model_copy(update=changes)


def spec_bytes(spec: TrainingSpec) -> bytes:
    """The spec file's bytes, as write_spec writes them."""
    return orjson.dumps(spec.model_dump(mode="json"), option=orjson.OPT_INDENT_2)


class Storage(ABC):
    """One storage place; `url` is what the user gave (a path, or s3://bucket/prefix)."""

    url: str

    @abstractmethod
    def check(self) -> None:
        """Raise StorageError, in one sentence, unless the place can be written."""

    @abstractmethod
    def stage_job(self, job_id: str, spec: TrainingSpec, remote: TrainingSpec, fresh: bool) -> None:
        """Put the job's dataset (from `spec`) and its `remote` spec in storage; `fresh`
        (a first start or a retry) removes any outputs of an earlier run there."""

    @abstractmethod
    def fetch_results(self, job_id: str, folder: Path) -> list[str]:
        """Copy the job's results into `folder`; return the names copied."""

    @abstractmethod
    def remove_job(self, job_id: str) -> None:
        """Remove the job's folder from storage."""

    @abstractmethod
    def entrypoint(self, job_id: str) -> str:
        """The command the cluster runs for the job, in its working_dir."""


def open_storage(text: str) -> Storage:
    """The storage a cluster's `--storage` names: an absolute path, or s3://bucket/prefix."""
    text = text.strip()
    if text.startswith("s3://"):
        return BucketStorage(text)
    if "://" in text:
        raise BadClusterError(
            f'"{text}" is not a storage place; give an absolute folder path both sides mount, '
            "or s3://bucket/prefix."
        )
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise BadClusterError(
            f'The storage path "{text}" is relative; give the absolute path of a folder that '
            "this machine and the cluster both mount."
        )
    return FolderStorage(path)


# -- a shared folder -------------------------------------------------------------------------


class FolderStorage(Storage):
    """A folder mounted at the same path here and on every node of the cluster."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def job_dir(self, job_id: str) -> Path:
        return self.root / JOBS / job_id

    def check(self) -> None:
        probe = self.root / JOBS / ".write-check"
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise _folder_error(self.root, error) from error

    def stage_job(self, job_id: str, spec: TrainingSpec, remote: TrainingSpec, fresh: bool) -> None:
        folder = self.job_dir(job_id)
        try:
            if fresh:
                for name in RUN_OUTPUTS:
                    _remove(folder / name)
            (folder / DATASET_DIR).mkdir(parents=True, exist_ok=True)
            for source, name in _dataset_files(spec):
                _copy_if_changed(source, folder / DATASET_DIR / name)
            (folder / SPEC_FILE).write_bytes(spec_bytes(remote))
        except OSError as error:
            raise _folder_error(self.root, error) from error

    def fetch_results(self, job_id: str, folder: Path) -> list[str]:
        source = self.job_dir(job_id)
        copied: list[str] = []
        try:
            for name in RESULTS:
                if (source / name).exists():
                    _replace_copy(source / name, folder / name)
                    copied.append(name)
        except OSError as error:
            raise _folder_error(self.root, error) from error
        return copied

    def remove_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def entrypoint(self, job_id: str) -> str:
        return f"python -m app.training --job-dir {_quoted(str(self.job_dir(job_id)))}"


def _dataset_files(spec: TrainingSpec) -> Iterator[tuple[Path, str]]:
    yield spec.dataset.records, RECORDS_FILE
    if spec.dataset.split is not None:
        yield spec.dataset.split, SPLIT_FILE


def _copy_if_changed(source: Path, target: Path) -> None:
    # An imported dataset never changes, so its size and time say whether it is already there.
    if target.exists():
        here, there = source.stat(), target.stat()
        if here.st_size == there.st_size and int(here.st_mtime) == int(there.st_mtime):
            return
    shutil.copy2(source, target)


def _replace_copy(source: Path, target: Path) -> None:
    _remove(target)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _folder_error(root: Path, error: OSError) -> StorageError:
    reason = error.strerror or type(error).__name__
    return StorageError(
        f"The cluster storage {root} cannot be written ({reason}); check that the shared folder "
        "is mounted here and writable."
    )


def _quoted(text: str) -> str:
    import shlex

    return shlex.quote(text)


# -- an S3-compatible bucket -----------------------------------------------------------------


class BucketStorage(Storage):
    """`s3://bucket/prefix` on AWS or any S3-compatible server (AWS_ENDPOINT_URL)."""

    def __init__(self, url: str, client: Any = None) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise BadClusterError(f'"{url}" names no bucket; write it as s3://bucket/prefix.')
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.prefix = PurePosixPath(prefix.strip("/")) if prefix.strip("/") else PurePosixPath()
        self._client = client

    def key(self, job_id: str, *names: str) -> str:
        return str(PurePosixPath(self.prefix, JOBS, job_id, *names)).lstrip("/")

    def check(self) -> None:
        self._call("reach the bucket", lambda s3: s3.head_bucket(Bucket=self.bucket))

    def stage_job(self, job_id: str, spec: TrainingSpec, remote: TrainingSpec, fresh: bool) -> None:
        if fresh:
            for name in RUN_OUTPUTS:
                self._delete_prefix(self.key(job_id, name))
        for source, name in _dataset_files(spec):
            self.upload_file(source, self.key(job_id, DATASET_DIR, name))
        body = spec_bytes(remote)
        key = self.key(job_id, SPEC_FILE)
        self._call(
            "write the spec", lambda s3: s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        )

    def fetch_results(self, job_id: str, folder: Path) -> list[str]:
        copied: list[str] = []
        for name in RESULTS:
            keys = self._keys(self.key(job_id, name))
            if not keys:
                continue
            _remove(folder / name)
            self.download(keys, self.key(job_id), folder)
            copied.append(name)
        return copied

    def download_job(self, job_id: str, folder: Path) -> None:
        """The whole job folder into `folder` (the launcher, on the cluster)."""
        self.download(self._keys(self.key(job_id) + "/"), self.key(job_id), folder)

    def upload_job(self, job_id: str, folder: Path, skip: tuple[str, ...] = (DATASET_DIR,)) -> None:
        """Every file under `folder` but `skip` into the job's folder (the launcher)."""
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and relative.parts[0] not in skip:
                self.upload_file(path, self.key(job_id, *relative.parts))

    def remove_job(self, job_id: str) -> None:
        self._delete_prefix(self.key(job_id) + "/")

    def entrypoint(self, job_id: str) -> str:
        return f"python -m app.executors.launch {_quoted(self.url)} {_quoted(job_id)}"

    def upload_file(self, source: Path, key: str) -> None:
        self._call(
            f"upload {source.name}", lambda s3: s3.upload_file(str(source), self.bucket, key)
        )

    def download(self, keys: list[str], under: str, folder: Path) -> None:
        for key in keys:
            target = folder / PurePosixPath(key).relative_to(under)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._call(
                f"download {key}",
                lambda s3, k=key, t=target: s3.download_file(self.bucket, k, str(t)),
            )

    def _keys(self, prefix: str) -> list[str]:
        def listing(s3: Any) -> list[str]:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return [item["Key"] for page in pages for item in page.get("Contents", [])]

        keys = self._call("list the job's files", listing)
        # `adapter` must not match `adapter_old/…`: a name is a file or a folder of it.
        return [k for k in keys if k == prefix or k.startswith(prefix.rstrip("/") + "/")]

    def _delete_prefix(self, prefix: str) -> None:
        keys = self._keys(prefix)
        for start in range(0, len(keys), 1000):  # the API's limit per request
            objects = [{"Key": key} for key in keys[start : start + 1000]]
            self._call(
                "remove old files",
                lambda s3, o=objects: s3.delete_objects(Bucket=self.bucket, Delete={"Objects": o}),
            )

    def _call(self, action: str, call: Any) -> Any:
        try:
            return call(self._s3())
        except StorageError:
            raise
        except Exception as error:  # boto3's errors share no base with OSError
            raise self._error(action, error) from error

    def _s3(self) -> Any:
        if self._client is None:
            self._client = _bucket_client()
        return self._client

    def _error(self, action: str, error: Exception) -> StorageError:
        detail = getattr(error, "response", {}).get("Error", {}).get("Code") or str(error)
        return StorageError(
            f"Could not {action} in {self.url} ({detail}); check AWS_ENDPOINT_URL, the "
            "credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and that the bucket exists."
        )


def _bucket_client() -> Any:
    try:
        import boto3
    except ImportError:
        raise StorageError(
            "A bucket needs boto3, which is not installed: install the app's s3 extra, pip "
            "install 'model-training-manager[s3]', or give the cluster a shared folder."
        ) from None
    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
