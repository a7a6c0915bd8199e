"""The Ray Jobs REST client against a stand-in head with the shapes RAY_JOBS.md §3 observed."""

from __future__ import annotations

import json

import httpx
import pytest

from app.errors import BadInputError, NotFoundError
from app.executors.errors import (
    ClusterAuthError,
    ClusterUnreachable,
    ClusterVersionUnsupported,
    ExecutorError,
    RemoteJobNotFound,
    UploadTooLarge,
)
from app.executors.log_socket import LogStreamLost
from app.executors.ray_client import (
    JobSubmission,
    RayJobsClient,
    insecure,
    normalise_url,
    websocket_url,
)
from tests.ray_head import FakeHead, job_details, log_socket_server

URL = "http://127.0.0.1:8265"
PACKAGE = "gcs://_ray_pkg_282cc49cdefdf01a.zip"


def client_for(head: FakeHead, token: str | None = None) -> RayJobsClient:
    return RayJobsClient(URL, token=token, transport=head.transport)


def submission(job_id: str = "a1b2c3d4e5f6") -> JobSubmission:
    return JobSubmission(
        entrypoint=f"python -m app.training --job-dir /shared/jobs/{job_id}",
        submission_id=job_id,
        runtime_env={"working_dir": PACKAGE, "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "120"}},
        metadata={"app_job_id": job_id},
        entrypoint_num_cpus=1,
        entrypoint_num_gpus=1,
    )


def test_version_and_check():
    with client_for(FakeHead()) as client:
        version = client.check()
    assert (version.version, version.ray_version) == ("4", "2.60.0")


def test_an_unknown_api_version_is_refused_in_one_sentence():
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"version": "9", "ray_version": "3.0.0"})

    with (
        RayJobsClient(URL, transport=httpx.MockTransport(handler)) as client,
        pytest.raises(ClusterVersionUnsupported, match=r"version '9'.*knows 4"),
    ):
        client.check()


def test_submit_sends_the_documented_body_and_is_idempotent():
    head = FakeHead()
    with client_for(head) as client:
        assert client.submit(submission()) is True
        assert client.submit(submission()) is False  # 500 "already exists": already submitted
    sent = json.loads(head.requests[0].content)
    assert head.requests[0].url.path == "/api/jobs/"  # the trailing slash matters
    assert sent == {
        "entrypoint": "python -m app.training --job-dir /shared/jobs/a1b2c3d4e5f6",
        "submission_id": "a1b2c3d4e5f6",
        "runtime_env": {
            "working_dir": PACKAGE,
            "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "120"},
        },
        "metadata": {"app_job_id": "a1b2c3d4e5f6"},
        "entrypoint_num_cpus": 1,
        "entrypoint_num_gpus": 1,
    }


def test_job_list_stop_delete_and_logs():
    head = FakeHead()
    with client_for(head) as client:
        client.submit(submission())
        head.jobs["a1b2c3d4e5f6"]["status"] = "RUNNING"
        head.logs["a1b2c3d4e5f6"] = "line one\nline two\n"
        details = client.job("a1b2c3d4e5f6")
        assert details.status == "RUNNING" and not details.terminal
        assert [job.submission_id for job in client.jobs()] == ["a1b2c3d4e5f6"]
        assert client.logs("a1b2c3d4e5f6") == "line one\nline two\n"
        assert client.stop("a1b2c3d4e5f6") is True
        assert client.stop("a1b2c3d4e5f6") is False  # already terminal
        assert client.job("a1b2c3d4e5f6").terminal
        assert client.delete("a1b2c3d4e5f6") is True
        with pytest.raises(RemoteJobNotFound, match="does not know job a1b2c3d4e5f6"):
            client.job("a1b2c3d4e5f6")


def test_an_old_head_lists_jobs_as_a_dict():
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"x": job_details("x", "SUCCEEDED")})

    with RayJobsClient(URL, transport=httpx.MockTransport(handler)) as client:
        assert [job.status for job in client.jobs()] == ["SUCCEEDED"]


def test_failed_job_details_are_read():
    failed = job_details(
        "j",
        "FAILED",
        error_type="RUNTIME_ENV_SETUP_FAILURE",
        message="Failed to set up runtime environment.\nFileNotFoundError: package",
        driver_exit_code=None,
    )

    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=failed)

    with RayJobsClient(URL, transport=httpx.MockTransport(handler)) as client:
        details = client.job("j")
    assert details.terminal and details.runtime_env_failed


def test_package_upload_skips_what_the_head_has():
    head = FakeHead()
    with client_for(head) as client:
        assert client.package_exists(PACKAGE) is False
        assert client.ensure_package(PACKAGE, b"PK zip bytes") is True
        assert client.ensure_package(PACKAGE, b"PK zip bytes") is False
    assert head.packages == {"gcs/_ray_pkg_282cc49cdefdf01a.zip": b"PK zip bytes"}
    assert head.paths() == [
        "GET /api/packages/gcs/_ray_pkg_282cc49cdefdf01a.zip",
        "GET /api/packages/gcs/_ray_pkg_282cc49cdefdf01a.zip",
        "PUT /api/packages/gcs/_ray_pkg_282cc49cdefdf01a.zip",
        "GET /api/packages/gcs/_ray_pkg_282cc49cdefdf01a.zip",
    ]
    assert head.requests[2].headers["Content-Type"] == "application/octet-stream"


def test_an_upload_over_the_limit_says_to_use_the_bucket():
    head = FakeHead(body_limit=10)
    with client_for(head) as client, pytest.raises(UploadTooLarge, match="s3:// storage bucket"):
        client.upload_package(PACKAGE, b"x" * 11)


def test_a_bad_package_uri_is_bad_input():
    with client_for(FakeHead()) as client, pytest.raises(BadInputError, match="package URI"):
        client.package_exists("_ray_pkg_x.zip")


@pytest.mark.parametrize(
    ("token", "status", "words"),
    [(None, 401, "none was sent"), ("wrong", 403, "refused the token")],
)
def test_token_missing_or_wrong(token, status, words):
    head = FakeHead(token="s3cret")
    with client_for(head, token) as client, pytest.raises(ClusterAuthError, match=words) as caught:
        client.version()
    assert caught.value.status == status


def test_the_token_goes_in_a_bearer_header():
    head = FakeHead(token="s3cret")
    with client_for(head, "s3cret") as client:
        client.version()
    assert head.requests[0].headers["Authorization"] == "Bearer s3cret"


def test_an_unreachable_head_is_one_sentence():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with (
        RayJobsClient(URL, transport=httpx.MockTransport(handler)) as client,
        pytest.raises(ClusterUnreachable, match=r"cannot be reached .*head is running\.$"),
    ):
        client.version()


def test_a_missing_entrypoint_is_refused_with_the_heads_words():
    head = FakeHead()

    def handler(request: httpx.Request) -> httpx.Response:
        return head.handle(httpx.Request("POST", request.url, json={"submission_id": "x"}))

    with (
        RayJobsClient(URL, transport=httpx.MockTransport(handler)) as client,
        pytest.raises(ExecutorError, match=r"refused to start job .*HTTP 400.*entrypoint"),
    ):
        client.submit(submission())


def test_a_404_job_is_a_not_found_error():
    with client_for(FakeHead()) as client, pytest.raises(NotFoundError):
        client.logs("does-not-exist")


def test_urls():
    assert normalise_url("head") == "http://head:8265"
    assert normalise_url("http://10.0.0.5:8265/") == "http://10.0.0.5:8265"
    assert normalise_url("https://ray.example.com") == "https://ray.example.com"
    with pytest.raises(BadInputError, match="Ray dashboard URL"):
        normalise_url("ftp://head")
    assert websocket_url("https://h", "/x") == "wss://h/x"
    assert websocket_url("http://h:1", "/x") == "ws://h:1/x"
    assert insecure("http://10.0.0.5:8265") and not insecure("http://127.0.0.1:8265")
    assert not insecure("https://ray.example.com")


# -- the log WebSocket -----------------------------------------------------------------------


def test_tail_yields_frames_until_the_head_closes():
    frames = ['Running entrypoint\n{"ev', 'ent": 1}\n', "done\n"]
    with log_socket_server(frames) as url, RayJobsClient(url, token="t") as client:
        assert list(client.tail_logs("j")) == frames


def test_a_dropped_tail_raises_stream_lost():
    with log_socket_server(["a\n"], drop=True) as url, RayJobsClient(url) as client:
        received: list[str] = []
        with pytest.raises(LogStreamLost, match="reconnects"):
            for frame in client.tail_logs("j"):
                received.append(frame)
    assert received == ["a\n"]


@pytest.mark.parametrize(
    ("status", "error"), [(401, ClusterAuthError), (403, ClusterAuthError), (404, NotFoundError)]
)
def test_a_refused_tail_handshake(status, error):
    with (
        log_socket_server([], status=status) as url,
        RayJobsClient(url) as client,
        pytest.raises(error),
    ):
        list(client.tail_logs("j"))


def test_a_tail_with_nothing_listening_is_unreachable():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        RayJobsClient(f"http://127.0.0.1:{port}") as client,
        pytest.raises(ClusterUnreachable, match="cannot be reached"),
    ):
        list(client.tail_logs("j"))
