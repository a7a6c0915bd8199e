"""Cluster storage: a shared folder, and an S3 bucket served by moto on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from app.errors import BadInputError
from app.executors.errors import StorageError
from app.executors.storage import (
    BucketStorage,
    FolderStorage,
    open_storage,
    remote_spec,
)
from app.jobs.spec import SPEC_FILE, DatasetSource, TrainingSpec, load_spec


@pytest.fixture
def spec(tmp_path: Path) -> TrainingSpec:
    data = tmp_path / "local-dataset"
    data.mkdir()
    (data / "records.jsonl").write_text('{"text": "hello"}\n')
    (data / "split.json").write_text('{"validation": [0]}')
    return TrainingSpec(
        base_model="HuggingFaceTB/SmolLM2-135M",
        dataset=DatasetSource(records=data / "records.jsonl", split=data / "split.json"),
        model_cache=tmp_path / "models",
    )


def test_the_remote_spec_holds_no_path_of_this_machine(spec):
    remote = remote_spec(spec, threads=8)
    assert remote.dataset == DatasetSource(
        records=Path("dataset/records.jsonl"), split=Path("dataset/split.json")
    )
    assert remote.model_cache is None and remote.threads == 8


def test_a_local_base_model_cannot_go_to_a_cluster(spec, tmp_path):
    local = spec.model_copy(update={"base_model": str(tmp_path)})
    with pytest.raises(BadInputError, match="Hugging Face id"):
        remote_spec(local)


def test_storage_places():
    assert isinstance(open_storage("/mnt/shared"), FolderStorage)
    assert isinstance(open_storage("s3://bucket/mtm"), BucketStorage)
    for bad in ("relative/path", "gs://bucket", "s3:///x"):
        with pytest.raises(BadInputError):
            open_storage(bad)


def test_a_folder_stages_the_job_and_brings_the_results_back(spec, tmp_path):
    storage = FolderStorage(tmp_path / "shared")
    storage.check()
    storage.stage_job("job1", spec, remote_spec(spec), fresh=True)
    remote = storage.job_dir("job1")
    staged = load_spec(remote / SPEC_FILE)  # relative paths resolve in the job's folder there
    assert staged.dataset.records == remote / "dataset/records.jsonl"
    assert staged.dataset.records.read_text() == '{"text": "hello"}\n'
    assert "python -m app.training --job-dir" in storage.entrypoint("job1")
    # What the trainer writes there:
    (remote / "adapter").mkdir()
    (remote / "adapter/adapter_config.json").write_text("{}")
    (remote / "checkpoints/step-5").mkdir(parents=True)
    (remote / "events.jsonl").write_text("{}\n")
    local = tmp_path / "local-job"
    local.mkdir()
    assert storage.fetch_results("job1", local) == ["adapter", "events.jsonl"]
    assert (local / "adapter/adapter_config.json").read_text() == "{}"
    assert not (local / "checkpoints").exists()  # they stay in storage, for a resume
    storage.stage_job("job1", spec, remote_spec(spec), fresh=False)
    assert (remote / "checkpoints/step-5").is_dir()  # a resume keeps them
    storage.stage_job("job1", spec, remote_spec(spec), fresh=True)
    assert not (remote / "checkpoints").exists()  # a retry starts over
    storage.remove_job("job1")
    assert not remote.exists()


def test_an_unwritable_folder_is_one_sentence(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match=r"cannot be written .*mounted here and writable"):
        FolderStorage(blocker).check()


# -- a bucket --------------------------------------------------------------------------------


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """moto's S3 on a free local port, with throwaway credentials in the environment."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    yield endpoint
    server.stop()


def test_a_bucket_stages_the_job_and_the_launcher_round_trips_it(spec, tmp_path, s3_endpoint):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="mtm")
    storage = BucketStorage("s3://mtm/teams/a")
    storage.check()
    storage.stage_job("job1", spec, remote_spec(spec), fresh=True)
    assert storage.entrypoint("job1") == "python -m app.executors.launch s3://mtm/teams/a job1"
    # The launcher's side, on the cluster: the folder down, a run, everything back up.
    work = tmp_path / "node"
    storage.download_job("job1", work)
    staged = orjson.loads((work / SPEC_FILE).read_bytes())
    assert staged["dataset"]["records"] == "dataset/records.jsonl"
    assert (work / "dataset/split.json").read_text() == '{"validation": [0]}'
    (work / "adapter").mkdir()
    (work / "adapter/adapter_model.safetensors").write_bytes(b"weights")
    (work / "checkpoints/step-2").mkdir(parents=True)
    (work / "checkpoints/step-2/state.json").write_text("{}")
    (work / "summary.json").write_text("{}")
    storage.upload_job("job1", work)
    local = tmp_path / "local-job"
    local.mkdir()
    assert storage.fetch_results("job1", local) == ["adapter", "summary.json"]
    assert (local / "adapter/adapter_model.safetensors").read_bytes() == b"weights"
    storage.stage_job("job1", spec, remote_spec(spec), fresh=True)  # a retry clears the run
    assert storage.fetch_results("job1", tmp_path / "again") == []
    storage.remove_job("job1")


def test_a_missing_bucket_is_one_sentence(s3_endpoint):
    with pytest.raises(StorageError, match=r"Could not reach the bucket in s3://nope .*exists\.$"):
        BucketStorage("s3://nope").check()
