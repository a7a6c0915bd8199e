"""The Ollama stand-in against the protocol recorded in ../shared/OLLAMA_API.md (§ numbers)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import ssl
import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.ollama_server import SMOLLM2_TEMPLATE, OllamaStandIn

MODEL = "smollm2:135m"
# One TLS context for every client: building one per httpx.Client costs ~40 ms.
SSL_CONTEXT = ssl.create_default_context()


@pytest.fixture
def client(ollama_server: OllamaStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ollama_server.url, timeout=10, verify=SSL_CONTEXT) as c:
        yield c


# -- helpers ----------------------------------------------------------------------------------


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(client: httpx.Client, data: bytes) -> str:
    digest = digest_of(data)
    response = client.post(f"/api/blobs/{digest}", content=data)
    assert response.status_code in (200, 201), response.text
    return digest


def ndjson(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[int, str, list[Any]]:
    """(status, content type, [parsed lines]) of a streamed POST; one item for a JSON answer."""
    with client.stream("POST", path, json=body) as response:
        raw = [line for line in response.iter_lines() if line]
        content_type = response.headers.get("content-type", "")
        return response.status_code, content_type, [json.loads(line) for line in raw]


def statuses(lines: list[dict[str, Any]]) -> list[str]:
    return [line.get("status") or f"error: {line.get('error')}" for line in lines]


def gguf_bytes(
    kv: dict[str, Any], tensors: tuple[tuple[str, tuple[int, ...], int], ...] = ()
) -> bytes:
    """A GGUF v3 file (metadata and tensor infos; no tensor data, which nothing here reads)."""

    def gstr(text: str) -> bytes:
        data = text.encode()
        return struct.pack("<Q", len(data)) + data

    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)))
    for key, value in kv.items():
        out += gstr(key)
        if isinstance(value, bool):
            out += struct.pack("<I?", 7, value)
        elif isinstance(value, int):
            out += struct.pack("<II", 4, value)
        elif isinstance(value, float):
            out += struct.pack("<If", 6, value)
        elif isinstance(value, str):
            out += struct.pack("<I", 8) + gstr(value)
        else:  # a list of strings
            out += struct.pack("<IIQ", 9, 8, len(value))
            for item in value:
                out += gstr(item)
    for name, shape, ggml_type in tensors:
        out += gstr(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", ggml_type, 0)
    return bytes(out)


def llama_gguf(*, arch: str = "llama", file_type: int | None = 1, emb: int = 64) -> bytes:
    kv: dict[str, Any] = {"general.architecture": arch, "general.name": "tiny"}
    if file_type is not None:
        kv["general.file_type"] = file_type
    kv.update(
        {
            f"{arch}.context_length": 256,
            f"{arch}.embedding_length": emb,
            f"{arch}.block_count": 2,
            f"{arch}.attention.head_count": 4,
            f"{arch}.attention.head_count_kv": 2,
            "tokenizer.ggml.tokens": [f"t{i}" for i in range(10)],
            "tokenizer.ggml.eos_token_id": 2,
        }
    )
    return gguf_bytes(kv, (("token_embd.weight", (emb, 10), 1), ("output_norm.weight", (emb,), 0)))


def safetensors_bytes(tensors: dict[str, tuple[int, ...]]) -> bytes:
    """The safetensors format by hand: 8-byte header length, JSON header, raw F16 zeros."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors.items():
        size = math.prod(shape) * 2
        header[name] = {
            "dtype": "F16",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def peft_tensors(
    *, rank: int = 8, emb: int = 576, kv_dim: int = 192, layers: int = 2
) -> dict[str, tuple[int, ...]]:
    tensors = {}
    for layer in range(layers):
        prefix = f"base_model.model.model.layers.{layer}.self_attn"
        tensors[f"{prefix}.q_proj.lora_A.weight"] = (rank, emb)
        tensors[f"{prefix}.q_proj.lora_B.weight"] = (emb, rank)
        tensors[f"{prefix}.v_proj.lora_A.weight"] = (rank, emb)
        tensors[f"{prefix}.v_proj.lora_B.weight"] = (kv_dim, rank)
    return tensors


def peft_config(lora_alpha: str = "16") -> bytes:
    return (
        '{"peft_type": "LORA", "r": 8, "lora_alpha": ' + lora_alpha + ', "target_modules": '
        '["q_proj", "v_proj"], "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}'
    ).encode()


def peft_adapter(client: httpx.Client, **kwargs: Any) -> dict[str, str]:
    config = kwargs.pop("config", peft_config())
    return {
        "adapter_model.safetensors": upload(client, safetensors_bytes(peft_tensors(**kwargs))),
        "adapter_config.json": upload(client, config),
    }


def hf_model(client: httpx.Client, architecture: str, **overrides: Any) -> dict[str, str]:
    config = {
        "architectures": [architecture],
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "vocab_size": 100,
        "intermediate_size": 128,
        **overrides,
    }
    return {
        "config.json": upload(client, json.dumps(config).encode()),
        "tokenizer.json": upload(client, b'{"model": {"vocab": {}}}'),
        "model.safetensors": upload(
            client, safetensors_bytes({"model.embed_tokens.weight": (100, 64)})
        ),
    }


def generate(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/generate", json={"model": MODEL, "stream": False, **body})
    assert response.status_code == 200, response.text
    return response.json()


# -- §0, §1: health, routing, host check ------------------------------------------------------


def test_root_and_version_answer_get_and_head(client: httpx.Client) -> None:
    root = client.get("/")
    assert (root.status_code, root.headers["content-type"]) == (200, "text/plain; charset=utf-8")
    assert root.text == "Ollama is running"
    assert client.head("/").status_code == 200
    version = client.get("/api/version")
    assert version.headers["content-type"] == "application/json; charset=utf-8"
    assert version.json() == {"version": "0.12.6"}
    assert client.head("/api/version").status_code == 200
    assert client.head("/api/tags").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/api/nothing", 404, "404 page not found"),
        ("POST", "/api/nothing", 404, "404 page not found"),
        ("GET", "/api/generate", 405, "405 method not allowed"),
        ("POST", "/api/ps", 405, "405 method not allowed"),
        ("HEAD", "/api/ps", 405, ""),
        ("GET", "/api/blobs/sha256:" + "0" * 64, 405, "405 method not allowed"),
        ("GET", "/api/delete", 405, "405 method not allowed"),
    ],
)
def test_unknown_paths_and_wrong_methods_get_gin_text_pages(
    client: httpx.Client, method: str, path: str, status: int, body: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "text/plain"
    assert response.text == body


@pytest.mark.parametrize("host", ["evil.example.com", "example.com:11434", "8.8.8.8"])
def test_non_local_host_header_gets_403_without_body(client: httpx.Client, host: str) -> None:
    response = client.get("/api/tags", headers={"Host": host})
    assert response.status_code == 403
    assert response.content == b""
    assert client.get("/api/nothing", headers={"Host": host}).status_code == 403


@pytest.mark.parametrize(
    "host",
    ["localhost:11434", "127.0.0.1", "10.1.2.3:80", "[::1]:11434", "box.local", "a.internal"],
)
def test_local_host_headers_pass(client: httpx.Client, host: str) -> None:
    assert client.get("/api/version", headers={"Host": host}).status_code == 200


def test_request_body_errors_use_go_messages(client: httpx.Client) -> None:
    cases = [
        (b"", "missing request body"),
        (b"   \n", "missing request body"),
        (b"garbage", "invalid character 'g' looking for beginning of value"),
        (b'{"model": "x"', "unexpected EOF"),
        (b'{"model" "x"}', "invalid character '\"' after object key"),
        (b"{model: 1}", "invalid character 'm' looking for beginning of object key string"),
        (b'{"model": tru}', "invalid character '}' in literal true (expecting 'e')"),
        (b"[]", "json: cannot unmarshal array into Go value of type api.ShowRequest"),
        (
            b'{"model": 5}',
            "json: cannot unmarshal number into Go struct field ShowRequest.model of type string",
        ),
    ]
    for body, message in cases:
        response = client.post("/api/show", content=body)
        assert response.status_code == 400, body
        assert response.json() == {"error": message}, body


def test_json_field_names_match_case_insensitively_like_go(client: httpx.Client) -> None:
    response = client.post("/api/show", json={"Model": MODEL})
    assert response.status_code == 200


# -- §2.2 tags ---------------------------------------------------------------------------------


def test_tags_lists_models_with_every_field(client: httpx.Client) -> None:
    [entry] = client.get("/api/tags").json()["models"]
    assert entry["name"] == entry["model"] == MODEL
    assert re.fullmatch(r"[0-9a-f]{64}", entry["digest"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", entry["modified_at"])
    assert entry["size"] == 270_898_112
    assert entry["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "135M",
        "quantization_level": "F16",
        "context_length": 8192,
        "embedding_length": 576,
    }
    assert entry["capabilities"] == ["completion"]


def test_tags_is_sorted_newest_first_and_never_null(ollama_server: OllamaStandIn) -> None:
    ollama_server.add_model("older:1b")
    time.sleep(0.002)
    ollama_server.add_model("newer:1b")
    with httpx.Client(base_url=ollama_server.url, verify=SSL_CONTEXT) as c:
        names = [m["name"] for m in c.get("/api/tags").json()["models"]]
        assert names == ["newer:1b", "older:1b", MODEL]
        for name in names:
            c.request("DELETE", "/api/delete", json={"model": name})
        assert c.get("/api/tags").json() == {"models": []}


# -- §2.3 show ---------------------------------------------------------------------------------


def test_show_reports_modelfile_details_info_and_capabilities(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    show = client.post("/api/show", json={"model": MODEL}).json()
    assert list(show) == [
        "modelfile",
        "parameters",
        "template",
        "system",
        "details",
        "model_info",
        "tensors",
        "capabilities",
        "modified_at",
    ]
    assert show["template"] == SMOLLM2_TEMPLATE
    assert show["system"].startswith("You are a helpful AI assistant named SmolLM")
    assert "context_length" not in show["details"]
    assert show["details"]["family"] == "llama"
    info = show["model_info"]
    assert info["general.architecture"] == "llama"
    assert info["general.parameter_count"] == 135_000_000
    assert info["general.file_type"] == 1
    assert info["llama.context_length"] == 8192
    assert info["llama.embedding_length"] == 576
    assert info["llama.block_count"] == 30
    assert info["llama.attention.head_count"] == 9
    assert info["llama.attention.head_count_kv"] == 3
    assert info["tokenizer.ggml.eos_token_id"] == 2
    assert info["tokenizer.ggml.tokens"] is None  # long arrays only with verbose
    assert show["capabilities"] == ["completion"]
    modelfile = show["modelfile"].splitlines()
    assert modelfile[:4] == [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {MODEL}",
        "",
    ]
    model_layer = ollama_server.model(MODEL).layers[0].digest
    assert modelfile[4] == f"FROM {ollama_server.blob_path(model_layer)}"
    assert 'TEMPLATE """{{- if .Messages }}' in show["modelfile"]
    assert "PARAMETER stop <|im_start|>" in modelfile
    assert "PARAMETER stop <|im_end|>" in modelfile
    assert show["parameters"] == (
        'stop                           "<|im_start|>"\nstop                           "<|im_end|>"'
    )
    verbose = client.post("/api/show", json={"model": MODEL, "verbose": True}).json()
    assert len(verbose["model_info"]["tokenizer.ggml.tokens"]) == 49152


def test_show_parameters_text_is_padded_like_the_transcript(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    ollama_server.add_model(
        "tiny", parameters={"temperature": 0, "num_ctx": 256, "stop": ["USER:"]}, license="MIT"
    )
    show = client.post("/api/show", json={"model": "tiny"}).json()
    assert show["parameters"] == (
        "temperature                    0\nnum_ctx                        256\n"
        'stop                           "USER:"'
    )
    assert show["license"] == "MIT"
    assert next(iter(show)) == "license"
    assert show["modelfile"].endswith(
        "TEMPLATE {{ .Prompt }}\nPARAMETER temperature 0\nPARAMETER num_ctx 256\n"
        "PARAMETER stop USER:\nLICENSE MIT\n"
    )


def test_show_errors(client: httpx.Client) -> None:
    nope = client.post("/api/show", json={"model": "nope"})
    assert nope.status_code == 404
    assert nope.headers["content-type"] == "application/json; charset=utf-8"
    assert nope.json() == {"error": "model 'nope:latest' not found"}
    assert client.post("/api/show", json={"model": "ns/nope:q4"}).json() == {
        "error": "model 'ns/nope:q4' not found"
    }
    empty = client.post("/api/show", json={})
    assert (empty.status_code, empty.json()) == (400, {"error": "model is required"})
    missing = client.post("/api/show")
    assert (missing.status_code, missing.json()) == (400, {"error": "missing request body"})


def test_names_default_the_tag_and_match_case_insensitively(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    assert client.post("/api/show", json={"model": "SmolLM2:135M"}).status_code == 200
    assert client.post("/api/show", json={"model": f"library/{MODEL}"}).status_code == 200
    ollama_server.add_model("plain")
    assert "plain:latest" in ollama_server.model_names()
    assert client.post("/api/show", json={"model": "plain:latest"}).status_code == 200
    assert client.post("/api/show", json={"name": "plain"}).status_code == 200  # deprecated field


@pytest.mark.parametrize("bad", ["/tmp/x.gguf", "./model.gguf", "a b", "x:", "a/b/c/d", "-x"])
def test_invalid_names_are_refused(client: httpx.Client, bad: str) -> None:
    for path, body in (
        ("/api/pull", {"model": bad}),
        ("/api/create", {"model": bad, "from": MODEL}),
    ):
        response = client.post(path, json=body)
        assert (response.status_code, response.json()) == (400, {"error": "invalid model name"})
    response = client.post("/api/create", json={"model": "ok", "from": bad})
    assert (response.status_code, response.json()) == (400, {"error": "invalid model name"})


# -- §2.9 delete, §2.11 copy --------------------------------------------------------------------


def test_copy_and_delete_follow_the_transcript(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    copied = client.post("/api/copy", json={"source": MODEL, "destination": "tiny16-copy"})
    assert (copied.status_code, copied.content) == (200, b"")
    assert "content-type" not in copied.headers
    assert ollama_server.model("tiny16-copy").digest == ollama_server.model(MODEL).digest
    deleted = client.request("DELETE", "/api/delete", json={"model": "tiny16-copy"})
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert "content-type" not in deleted.headers
    again = client.request("DELETE", "/api/delete", json={"model": "tiny16-copy"})
    assert (again.status_code, again.json()) == (404, {"error": "model 'tiny16-copy' not found"})
    blank = client.request("DELETE", "/api/delete", json={"model": ""})
    assert (blank.status_code, blank.json()) == (400, {"error": "model is required"})
    nope = client.post("/api/copy", json={"source": "nope", "destination": "x"})
    assert (nope.status_code, nope.json()) == (404, {"error": 'model "nope" not found'})
    bad = client.post("/api/copy", json={"source": MODEL, "destination": "a b"})
    assert (bad.status_code, bad.json()) == (400, {"error": 'destination "a b" is invalid'})
    # The base's blobs are still there: the copy shared them.
    assert ollama_server.blob_path(ollama_server.model(MODEL).layers[0].digest) is not None


def test_delete_removes_blobs_no_other_model_uses(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    ollama_server.add_model("lonely", system="only mine")
    digests = [layer.digest for layer in ollama_server.model("lonely").layers]
    client.request("DELETE", "/api/delete", json={"model": "lonely"})
    assert all(ollama_server.blob_path(d) is None for d in digests)


# -- §2.5 blobs --------------------------------------------------------------------------------


def test_blob_transcript(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    data = b"some model bytes" * 1000
    digest = digest_of(data)
    assert client.head(f"/api/blobs/{digest}").status_code == 404
    created = client.post(f"/api/blobs/{digest}", content=data)
    assert (created.status_code, created.content) == (201, b"")
    assert client.head(f"/api/blobs/{digest}").status_code == 200
    assert client.head(f"/api/blobs/sha256-{digest[7:]}").status_code == 200
    assert client.post(f"/api/blobs/{digest}", content=data).status_code == 200
    path = ollama_server.blob_path(digest)
    assert path is not None
    assert path.read_bytes() == data
    assert path.name == f"sha256-{digest[7:]}"


def test_blob_digest_rules(client: httpx.Client) -> None:
    zeros = "sha256:" + "0" * 64
    mismatch = client.post(f"/api/blobs/{zeros}", content=b"hello")
    hello = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert mismatch.status_code == 400
    assert mismatch.json() == {
        "error": f'digest mismatch, expected "{zeros}", got "sha256:{hello}"'
    }
    data = b"uppercase digests never match"
    lower = digest_of(data)
    upper = "sha256:" + lower[7:].upper()
    refused = client.post(f"/api/blobs/{upper}", content=data)
    assert refused.status_code == 400
    assert refused.json() == {"error": f'digest mismatch, expected "{upper}", got "{lower}"'}
    dashed = "sha256-" + digest_of(b"dash form")[7:]
    refused = client.post(f"/api/blobs/{dashed}", content=b"dash form")
    assert refused.json() == {
        "error": f'digest mismatch, expected "{dashed}", got "{digest_of(b"dash form")}"'
    }
    assert client.head("/api/blobs/sha256:zz").status_code == 400
    invalid = client.post("/api/blobs/sha256:zz", content=b"x")
    assert (invalid.status_code, invalid.json()) == (400, {"error": "invalid digest format"})
    assert client.head("/api/blobs/sha256-" + "0" * 64).status_code == 404


def test_refused_blob_uploads_are_recorded_with_their_size(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    client.post("/api/blobs/sha256:zz", content=b"12345")
    assert ollama_server.requests[-1].body_size == 5
    client.post("/api/blobs/sha256:" + "0" * 64, content=b"123", headers={"Host": "evil.example"})
    assert ollama_server.requests[-1].body_size == 3
    ollama_server.fail_before_stream("/api/blobs", 507, "no space left on device")
    refused = client.post(f"/api/blobs/{digest_of(b'x')}", content=b"x")
    assert (refused.status_code, refused.json()) == (507, {"error": "no space left on device"})
    assert ollama_server.requests[-1].body_size == 1
    assert ollama_server.blob_path(digest_of(b"x")) is None
    assert client.post(f"/api/blobs/{digest_of(b'x')}", content=b"x").status_code == 201


def test_blob_upload_accepts_chunked_transfer_encoding(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    parts = [b"a" * 70_000, b"b" * 3, b"c" * 200_000]
    digest = digest_of(b"".join(parts))
    response = client.post(f"/api/blobs/{digest}", content=iter(parts))
    assert response.status_code == 201
    blob_request = ollama_server.requests[-1]
    assert (blob_request.method, blob_request.json, blob_request.body_size) == (
        "POST",
        None,
        270_003,
    )
    assert blob_request.headers["transfer-encoding"] == "chunked"


def test_blob_upload_streams_to_disk_in_constant_memory(client: httpx.Client) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    count = 48
    hasher = hashlib.sha256()
    for _ in range(count):
        hasher.update(chunk)
    digest = "sha256:" + hasher.hexdigest()
    tracemalloc.start()
    try:
        response = client.post(f"/api/blobs/{digest}", content=(chunk for _ in range(count)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 201
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes for a {count} MiB upload"


# -- §2.6 / §4 create ----------------------------------------------------------------------------


def test_create_from_gguf_files_streams_the_transcript_lines(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    digest = upload(client, llama_gguf())
    status, content_type, lines = ndjson(
        client,
        "/api/create",
        {
            "model": "tiny",
            "files": {"tiny-llama-f16.gguf": digest},
            "template": "{{ .System }} USER: {{ .Prompt }} ASSISTANT:",
            "parameters": {"num_ctx": 256, "temperature": 0, "stop": ["USER:"]},
            "system": "be brief",
            "license": "MIT test license",
        },
    )
    assert (status, content_type) == (200, "application/x-ndjson")
    names = statuses(lines)
    assert names[:2] == ["parsing GGUF", "verifying conversion"]
    assert [n.split(" sha256:")[0] for n in names[2:7]] == ["creating new layer"] * 5
    assert all(re.fullmatch(r"creating new layer sha256:[0-9a-f]{64}", n) for n in names[2:7])
    assert names[7:] == ["writing manifest", "success"]
    model = ollama_server.model("tiny")
    assert (model.family, model.quantization_level, model.parent_model) == ("llama", "F16", "")
    assert model.info("embedding_length") == 64
    assert model.info("context_length") == 256
    assert model.info("vocab_size") == 10
    assert model.files == {"tiny-llama-f16.gguf": digest}
    show = client.post("/api/show", json={"model": "tiny"}).json()
    assert show["license"] == "MIT test license"
    assert show["system"] == "be brief"
    assert "general.name" not in show["model_info"]
    assert show["tensors"][0] == {"name": "token_embd.weight", "type": "F16", "shape": [64, 10]}
    assert show["details"]["parameter_size"] == "704"


def test_create_reads_a_gguf_written_by_the_gguf_package(
    ollama_server: OllamaStandIn, client: httpx.Client, tmp_path: Any
) -> None:
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "written.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_context_length(1024)
    writer.add_embedding_length(32)
    writer.add_block_count(3)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_file_type(7)
    writer.add_tensor("token_embd.weight", np.zeros((5, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    digest = upload(client, path.read_bytes())
    _, _, lines = ndjson(client, "/api/create", {"model": "q", "files": {"q.gguf": digest}})
    assert statuses(lines)[-1] == "success", lines
    model = ollama_server.model("q")
    assert (model.family, model.quantization_level) == ("qwen2", "Q8_0")
    assert (model.info("embedding_length"), model.info("block_count")) == (32, 3)


def test_create_files_errors(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    not_gguf = upload(client, b"this is not a gguf file")
    _, _, lines = ndjson(client, "/api/create", {"model": "x", "files": {"x.gguf": not_gguf}})
    assert statuses(lines) == ["parsing GGUF", "error: invalid file magic"]
    ghost = "sha256:" + "1" * 64
    _, _, lines = ndjson(client, "/api/create", {"model": "x", "files": {"x.gguf": ghost}})
    assert lines[0] == {"status": "parsing GGUF"}
    blob = ollama_server.blobs_dir / ("sha256-" + "1" * 64)
    assert lines[1] == {"error": f"open {blob}: no such file or directory"}
    relative = client.post("/api/create", json={"model": "x", "files": {"../x.gguf": not_gguf}})
    assert (relative.status_code, relative.json()) == (
        400,
        {"error": "file path must be relative: ../x.gguf"},
    )
    for bad in ("", "sha256:abc", "md5:" + "0" * 64):
        response = client.post("/api/create", json={"model": "x", "files": {"x.gguf": bad}})
        assert (response.status_code, response.json()) == (400, {"error": "invalid digest format"})
    unknown = client.post("/api/create", json={"model": "x", "files": {"notes.txt": not_gguf}})
    assert (unknown.status_code, unknown.json()) == (400, {"error": "unknown type"})
    assert not ollama_server.has_model("x")


def test_create_needs_from_or_files(client: httpx.Client) -> None:
    for body in (
        {"model": "x"},
        {"model": "x", "modelfile": f"FROM {MODEL}"},
        {"model": "x", "adapters": {"adapter.gguf": "sha256:" + "0" * 64}},
    ):
        response = client.post("/api/create", json=body)
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"error": "neither 'from' or 'files' was specified"}


def test_create_from_a_safetensors_model(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    files = hf_model(client, "Qwen2ForCausalLM")
    _, _, lines = ndjson(client, "/api/create", {"model": "merged", "files": files})
    names = statuses(lines)
    assert names[0] == "converting model"
    assert any(re.fullmatch(r"creating new layer sha256:[0-9a-f]{64}", n) for n in names)
    assert names[-2:] == ["writing manifest", "success"]
    model = ollama_server.model("merged")
    assert (model.family, model.quantization_level) == ("qwen2", "F16")
    assert model.info("embedding_length") == 64
    assert model.info("block_count") == 2
    assert model.info("attention.head_count_kv") == 2
    assert model.info("context_length") == 512
    assert model.info("feed_forward_length") == 128
    assert model.parameter_size == "6K"


@pytest.mark.parametrize(
    ("architecture", "family"),
    [
        ("LlamaForCausalLM", "llama"),
        ("MixtralForCausalLM", "llama"),
        ("GemmaForCausalLM", "gemma"),
        ("Gemma2ForCausalLM", "gemma2"),
        ("Gemma3ForCausalLM", "gemma3"),
        ("Phi3ForCausalLM", "phi3"),
    ],
)
def test_safetensors_architectures_map_to_families(
    ollama_server: OllamaStandIn, client: httpx.Client, architecture: str, family: str
) -> None:
    _, _, lines = ndjson(
        client, "/api/create", {"model": "m", "files": hf_model(client, architecture)}
    )
    assert statuses(lines)[-1] == "success"
    assert ollama_server.model("m").family == family


@pytest.mark.parametrize("architecture", ["MistralForCausalLM", "Qwen3ForCausalLM", "FooForBar"])
def test_unsupported_safetensors_architectures_fail_mid_stream(
    client: httpx.Client, architecture: str
) -> None:
    status, _, lines = ndjson(
        client, "/api/create", {"model": "m", "files": hf_model(client, architecture)}
    )
    assert status == 200
    assert statuses(lines) == [
        "converting model",
        f'error: unsupported architecture "{architecture}"',
    ]


def test_safetensors_model_needs_config_and_tokenizer(client: httpx.Client) -> None:
    files = hf_model(client, "LlamaForCausalLM")
    no_config = {k: v for k, v in files.items() if k != "config.json"}
    _, _, lines = ndjson(client, "/api/create", {"model": "m", "files": no_config})
    assert statuses(lines) == [
        "converting model",
        "error: open config.json: no such file or directory",
    ]
    no_tokenizer = {k: v for k, v in files.items() if k != "tokenizer.json"}
    _, _, lines = ndjson(client, "/api/create", {"model": "m", "files": no_tokenizer})
    assert statuses(lines)[-1] == "error: unknown tokenizer format"


def test_create_from_an_unknown_model_tries_the_registry(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    status, _, lines = ndjson(client, "/api/create", {"model": "x", "from": "llama3.2:1b"})
    assert status == 200
    assert lines == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    ollama_server.add_registry_model("llama3.2:1b", layer_sizes=[2000, 10])
    _, _, lines = ndjson(
        client, "/api/create", {"model": "x", "from": "llama3.2:1b", "system": "hi"}
    )
    names = statuses(lines)
    assert names[0] == "pulling manifest"
    assert "verifying sha256 digest" in names
    assert names[-2:] == ["writing manifest", "success"]
    assert ollama_server.model("x").parent_model == "llama3.2:1b"
    assert ollama_server.has_model("llama3.2:1b")


def test_create_template_must_parse_as_a_go_template(client: httpx.Client) -> None:
    cases = {
        "{{ .Prompt": "template: :1: unclosed action",
        "{{ .Prompt }": "template: :1: unrecognized character in action: U+007D '}'",
        "hi {{ end }}": "template: :1: unexpected {{end}}",
        "{{ if .System }}\n{{ .System }}\n": "template: :3: unexpected EOF",
        "{{ else }}": "template: :1: unexpected {{else}}",
        "{{ if .X }}a{{ else }}b{{ else }}c{{ end }}": "template: :1: expected end; found {{else}}",
        "{{ frobnicate .Prompt }}": 'template: :1: function "frobnicate" not defined',
        "{{ }}": "template: :1: missing value for command",
        "{{ if }}{{ end }}": "template: :1: missing value for if",
        "{{ $x }}": 'template: :1: undefined variable "$x"',
        "{{ break }}": "template: :1: {{break}} outside {{range}}",
        "{{ range .X }}{{ else if .Y }}{{ end }}": "template: :1: unexpected <if> in input",
    }
    for template, message in cases.items():
        response = client.post(
            "/api/create", json={"model": "t", "from": MODEL, "template": template}
        )
        assert response.status_code == 400, template
        assert response.json() == {"error": f"template error: {message}"}, template
    valid = [
        SMOLLM2_TEMPLATE,
        '{{- range $i, $m := .Messages }}{{ if eq $m.Role "user" }}U{{ else if eq .Role '
        '"system" }}S{{ else }}A{{ end }}{{ end }}',
        '{{/* a comment */}}{{ with .System }}{{ . }}{{ else }}none{{ end }}{{ "}}" }}',
        '{{ define "x" }}{{ .Prompt }}{{ end }}{{ template "x" . }}{{- /* trimmed */ -}}',
        "{{ range .Messages }}{{ if .Content }}{{ continue }}{{ end }}{{ break }}{{ end }}",
        '{{ printf "%s" (json .Messages) | len }}{{ $x := 1 }}{{ $x = 2 }}{{ $x }}',
    ]
    for template in valid:
        _, _, lines = ndjson(
            client, "/api/create", {"model": "t", "from": MODEL, "template": template}
        )
        assert statuses(lines)[-1] == "success", (template, lines)


def test_create_merges_parameters_and_appends_licenses(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    ollama_server.add_model("base", parameters={"temperature": 0.7, "num_ctx": 1024}, license="A")
    body = {
        "model": "child",
        "from": "base",
        "parameters": {"num_ctx": 4096, "stop": ["<|eot_id|>"]},
        "license": ["B", "C"],
        "system": "new system",
        "messages": [{"role": "User", "content": "hello"}, {"role": "assistant", "content": "hi"}],
    }
    _, _, lines = ndjson(client, "/api/create", body)
    assert statuses(lines)[-1] == "success"
    child = ollama_server.model("child")
    assert child.parameters == {"num_ctx": 4096, "stop": ["<|eot_id|>"], "temperature": 0.7}
    assert child.license == "A\nB\nC"
    assert child.system == "new system"
    assert child.messages == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
    ]
    assert child.parent_model == "base:latest"
    show = client.post("/api/show", json={"model": "child"}).json()
    assert show["messages"] == child.messages
    assert show["details"]["parent_model"] == "base:latest"
    assert "MESSAGE user hello" in show["modelfile"]
    tags = {m["name"]: m for m in client.get("/api/tags").json()["models"]}
    assert tags["child:latest"]["details"]["parent_model"] == "base:latest"


def test_create_stream_false_answers_one_object(client: httpx.Client) -> None:
    response = client.post("/api/create", json={"model": "x", "from": MODEL, "stream": False})
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    assert response.json() == {"status": "success"}
    failed = client.post("/api/create", json={"model": "x", "from": "nope", "stream": False})
    assert failed.status_code == 500
    assert failed.json() == {"error": "pull model manifest: file does not exist"}


def test_quantize(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    _, _, lines = ndjson(
        client, "/api/create", {"model": "q4", "from": MODEL, "quantize": "q4_K_M"}
    )
    progress = [line for line in lines if line.get("status", "").startswith("quantizing")]
    assert progress
    assert all(line["status"] == "quantizing F16 model to Q4_K_M" for line in progress)
    assert all(line["digest"] == "0000000000000000000" for line in progress)
    assert progress[-1]["completed"] == progress[-1]["total"] > 0
    assert statuses(lines)[-1] == "success"
    quantized = ollama_server.model("q4")
    assert quantized.quantization_level == "Q4_K_M"
    assert quantized.model_info["general.file_type"] == 15
    assert quantized.size < ollama_server.model(MODEL).size
    unknown = client.post("/api/create", json={"model": "q", "from": MODEL, "quantize": "Q9_9"})
    assert unknown.status_code == 500
    assert unknown.json() == {
        "error": "unsupported quantization type Q9_9 - supported types are "
        "F32, F16, Q4_K_S, Q4_K_M, Q8_0"
    }
    again = client.post("/api/create", json={"model": "q", "from": "q4", "quantize": "q8_0"})
    assert again.status_code == 500
    assert again.json() == {"error": "quantization is only supported for F16, BF16 and F32 models"}


def test_a_gguf_without_file_type_cannot_be_quantized(client: httpx.Client) -> None:
    # ggml reads general.file_type 0 (F32) or a missing one as "unknown": the transcript's F32 case.
    digest = upload(client, llama_gguf(file_type=0))
    _, _, lines = ndjson(client, "/api/create", {"model": "tiny", "files": {"t.gguf": digest}})
    assert statuses(lines)[-1] == "success"
    refused = client.post("/api/create", json={"model": "t8", "from": "tiny", "quantize": "q8_0"})
    assert refused.status_code == 500
    assert refused.json() == {
        "error": "quantization is only supported for F16, BF16 and F32 models"
    }


# -- §4 adapters -------------------------------------------------------------------------------


def test_peft_adapter_on_a_llama_base(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    base = ollama_server.model(MODEL)
    adapters = peft_adapter(client)
    _, _, lines = ndjson(
        client, "/api/create", {"model": "tiny-ft-peft", "from": MODEL, "adapters": adapters}
    )
    names = statuses(lines)
    assert names[0] == "converting adapter"
    assert names[1 : 1 + len(base.layers)] == [
        f"using existing layer {layer.digest}" for layer in base.layers
    ]
    assert re.fullmatch(r"creating new layer sha256:[0-9a-f]{64}", names[1 + len(base.layers)])
    assert names[-2:] == ["writing manifest", "success"]
    tuned = ollama_server.model("tiny-ft-peft")
    assert len(tuned.adapters) == 1
    assert ollama_server.blob_path(tuned.adapters[0]) is not None
    assert tuned.parent_model == f"{MODEL}"
    assert tuned.template == base.template
    show = client.post("/api/show", json={"model": "tiny-ft-peft"}).json()
    assert f"ADAPTER {ollama_server.blob_path(tuned.adapters[0])}" in show["modelfile"]
    assert show["details"]["parent_model"] == MODEL
    prompt = {"prompt": "why is the sky blue", "options": {"seed": 1, "temperature": 0}}
    assert (
        generate(client, **prompt)["response"]
        != generate(client, **{**prompt, "model": "tiny-ft-peft"})["response"]
    )


def test_mlx_adapter_with_lora_parameters(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    tensors = {
        "model.layers.0.self_attn.q_proj.lora_a": (576, 8),
        "model.layers.0.self_attn.q_proj.lora_b": (8, 576),
    }
    adapters = {
        "adapters.safetensors": upload(client, safetensors_bytes(tensors)),
        "adapter_config.json": upload(
            client,
            b'{"lora_layers": 16, "lora_parameters": {"rank": 8, "alpha": 16.0, "scale": 2.0}}',
        ),
    }
    _, _, lines = ndjson(
        client, "/api/create", {"model": "mlx", "from": MODEL, "adapters": adapters}
    )
    assert statuses(lines)[-1] == "success"


def test_lora_alpha_must_be_an_integer(client: httpx.Client) -> None:
    adapters = peft_adapter(client, config=peft_config("16.0"))
    status, _, lines = ndjson(
        client, "/api/create", {"model": "x", "from": MODEL, "adapters": adapters}
    )
    assert status == 200
    assert lines == [
        {"status": "converting adapter"},
        {
            "error": "json: cannot unmarshal number 16.0 into Go struct field "
            "AdapterParameters.lora_alpha of type uint32"
        },
    ]
    text = peft_adapter(client, config=peft_config('"16"'))
    _, _, lines = ndjson(client, "/api/create", {"model": "x", "from": MODEL, "adapters": text})
    assert lines[-1] == {
        "error": "json: cannot unmarshal string into Go struct field "
        "AdapterParameters.lora_alpha of type uint32"
    }


def test_safetensors_adapter_needs_adapter_config_at_the_root(client: httpx.Client) -> None:
    adapters = peft_adapter(client)
    only_tensors = {"adapter_model.safetensors": adapters["adapter_model.safetensors"]}
    _, _, lines = ndjson(
        client, "/api/create", {"model": "x", "from": MODEL, "adapters": only_tensors}
    )
    assert lines == [
        {"status": "converting adapter"},
        {"error": "open adapter_config.json: no such file or directory"},
    ]
    nested = {
        "ckpt/adapter_model.safetensors": adapters["adapter_model.safetensors"],
        "adapter_config.json": adapters["adapter_config.json"],
    }
    _, _, lines = ndjson(client, "/api/create", {"model": "x", "from": MODEL, "adapters": nested})
    assert lines[-1] == {"error": "unknown tensor format"}


def test_safetensors_adapter_needs_a_llama_or_gemma2_base(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    ollama_server.add_model("tinyqwen", family="qwen2")
    adapters = peft_adapter(client)
    status, _, lines = ndjson(
        client,
        "/api/create",
        {"model": "tinyqwen-ft-peft", "from": "tinyqwen", "adapters": adapters},
    )
    assert status == 200
    assert lines == [{"status": "converting adapter"}, {"error": "unsupported architecture"}]
    assert not ollama_server.has_model("tinyqwen-ft-peft")
    ollama_server.add_model("tinygemma2", family="gemma2")
    _, _, lines = ndjson(
        client, "/api/create", {"model": "g", "from": "tinygemma2", "adapters": adapters}
    )
    assert statuses(lines)[-1] == "success"


def test_adapter_shapes_must_fit_the_base(client: httpx.Client) -> None:
    wide = peft_adapter(client, emb=960, kv_dim=320)
    _, _, lines = ndjson(client, "/api/create", {"model": "x", "from": MODEL, "adapters": wide})
    assert lines[0] == {"status": "converting adapter"}
    assert "embedding_length 576" in lines[1]["error"]
    assert "different base model" in lines[1]["error"]
    deep = peft_adapter(client, layers=31)
    _, _, lines = ndjson(client, "/api/create", {"model": "x", "from": MODEL, "adapters": deep})
    assert "layer 30" in lines[1]["error"]
    assert "block_count 30" in lines[1]["error"]


def test_gguf_adapters(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    lora = gguf_bytes(
        {"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora"}
    )
    digest = upload(client, lora)
    _, _, lines = ndjson(
        client, "/api/create", {"model": "g", "from": MODEL, "adapters": {"tiny-lora.gguf": digest}}
    )
    assert statuses(lines)[0] == "parsing GGUF"
    assert statuses(lines)[-1] == "success"
    assert ollama_server.model("g").adapters == [digest]
    _, _, lines = ndjson(
        client, "/api/create", {"model": "g2", "from": MODEL, "adapters": {"lora": digest}}
    )
    assert statuses(lines)[-1] == "success"
    ollama_server.add_model("tinyqwen", family="qwen2")  # GGUF adapters fit any base
    _, _, lines = ndjson(
        client, "/api/create", {"model": "g3", "from": "tinyqwen", "adapters": {"a.gguf": digest}}
    )
    assert statuses(lines)[-1] == "success"
    other = upload(client, lora + b"\x00")
    two = client.post(
        "/api/create",
        json={"model": "g4", "from": MODEL, "adapters": {"a.gguf": digest, "b.gguf": other}},
    )
    assert (two.status_code, two.json()) == (
        400,
        {"error": "only one adapter is currently supported"},
    )
    mixed = client.post(
        "/api/create",
        json={"model": "g4", "from": MODEL, "adapters": {"a.gguf": digest, **peft_adapter(client)}},
    )
    assert (mixed.status_code, mixed.json()) == (400, {"error": "mixed model file types"})


def test_adapter_paths_digests_and_missing_blobs(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    adapters = peft_adapter(client)
    outside = {"../x.safetensors": adapters["adapter_model.safetensors"]}
    response = client.post("/api/create", json={"model": "x", "from": MODEL, "adapters": outside})
    assert (response.status_code, response.json()) == (
        400,
        {"error": "file path must be relative: ../x.safetensors"},
    )
    empty = {"adapter_model.safetensors": ""}
    response = client.post("/api/create", json={"model": "x", "from": MODEL, "adapters": empty})
    assert (response.status_code, response.json()) == (400, {"error": "invalid digest format"})
    ghost = {**adapters, "adapter_model.safetensors": "sha256:" + "1" * 64}
    _, _, lines = ndjson(client, "/api/create", {"model": "x", "from": MODEL, "adapters": ghost})
    blob = ollama_server.blobs_dir / ("sha256-" + "1" * 64)
    assert lines == [
        {"status": "converting adapter"},
        {"error": f"open {blob}: no such file or directory"},
    ]


def test_adapter_errors_with_stream_false_are_400(client: httpx.Client) -> None:
    adapters = peft_adapter(client, config=peft_config("16.0"))
    response = client.post(
        "/api/create", json={"model": "x", "from": MODEL, "adapters": adapters, "stream": False}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("json: cannot unmarshal number 16.0")
    ok = client.post(
        "/api/create",
        json={"model": "x", "from": MODEL, "adapters": peft_adapter(client), "stream": False},
    )
    assert (ok.status_code, ok.json()) == (200, {"status": "success"})


# -- version switch (§0.4) ------------------------------------------------------------------------


def test_old_servers_want_a_modelfile(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    ollama_server.version = "0.5.4"
    assert client.get("/api/version").json() == {"version": "0.5.4"}
    response = client.post("/api/create", json={"model": "x", "from": MODEL})
    assert (response.status_code, response.json()) == (
        400,
        {"error": "path or Modelfile are required"},
    )
    modelfile = f'FROM {MODEL}\nSYSTEM """be\nbrief"""\nPARAMETER num_ctx 512\nPARAMETER stop END'
    _, _, lines = ndjson(client, "/api/create", {"model": "old", "modelfile": modelfile})
    assert statuses(lines)[-1] == "success"
    old = ollama_server.model("old")
    assert old.system == "be\nbrief"
    assert old.parameters["num_ctx"] == 512
    assert old.parameters["stop"] == ["END"]  # new keys win over the base's
    digest = upload(client, llama_gguf())
    _, _, lines = ndjson(client, "/api/create", {"model": "old2", "modelfile": f"FROM @{digest}"})
    assert statuses(lines)[-1] == "success"
    ollama_server.version = "0.12.6"
    response = client.post("/api/create", json={"model": "new", "modelfile": f"FROM {MODEL}"})
    assert response.json() == {"error": "neither 'from' or 'files' was specified"}


# -- §2.7 generate -------------------------------------------------------------------------------


def test_generate_streams_tokens_then_stats(client: httpx.Client) -> None:
    status, content_type, lines = ndjson(
        client,
        "/api/generate",
        {"model": MODEL, "prompt": "why is the sky blue", "options": {"num_predict": 3, "seed": 1}},
    )
    assert (status, content_type) == (200, "application/x-ndjson")
    *chunks, final = lines
    assert len(chunks) == 3
    for chunk in chunks:
        assert list(chunk) == ["model", "created_at", "response", "done"]
        assert chunk["done"] is False
        assert chunk["model"] == MODEL
        assert chunk["response"].endswith(" ")
    assert final["done"] is True
    assert final["response"] == ""
    assert final["done_reason"] == "length"
    assert list(final) == [
        "model",
        "created_at",
        "response",
        "done",
        "done_reason",
        "context",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ]
    for key in list(final)[6:]:
        assert isinstance(final[key], int) and final[key] > 0, key
    assert final["eval_count"] == 3
    assert final["total_duration"] >= final["load_duration"]
    assert all(isinstance(t, int) for t in final["context"])


def test_generate_prompt_tokens_and_context_window(client: httpx.Client) -> None:
    one = generate(client, prompt="one two three")
    four = generate(client, prompt="one two three four")
    assert four["prompt_eval_count"] == one["prompt_eval_count"] + 1
    long_prompt = " ".join(["word"] * 300)
    ok = generate(client, prompt=long_prompt, options={"num_ctx": 256})
    assert ok["prompt_eval_count"] == 256  # silently truncated
    response = client.post(
        "/api/generate",
        json={
            "model": MODEL,
            "prompt": long_prompt,
            "truncate": False,
            "options": {"num_ctx": 256},
        },
    )
    assert response.status_code == 400
    count = ok["prompt_eval_count"]
    error = response.json()["error"]
    inner = json.loads(error)
    n_prompt = inner["error"]["n_prompt_tokens"]
    assert n_prompt > count
    assert error == (
        '{"error":{"code":400,"message":"request (' + str(n_prompt) + " tokens) exceeds the "
        'available context size (256 tokens), try increasing it",'
        '"type":"exceed_context_size_error","n_prompt_tokens":' + str(n_prompt) + ',"n_ctx":256}}'
    )
    fits = generate(client, prompt="short", truncate=False, options={"num_ctx": 256})
    assert fits["done_reason"] == "stop"


def test_generate_is_deterministic_and_model_specific(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    options = {"temperature": 0, "seed": 42}
    first = generate(client, prompt="hello there", options=options)["response"]
    assert generate(client, prompt="hello there", options=options)["response"] == first
    assert generate(client, prompt="something else", options=options)["response"] != first
    ollama_server.add_model("other")
    other = generate(client, model="other", prompt="hello there", options=options)["response"]
    assert other != first
    assert 4 <= len(first.split()) <= 12


def test_set_reply_and_stop_sequences(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    ollama_server.set_reply(MODEL, "The sky is blue. USER: more")
    full = generate(client, prompt="sky?", options={"stop": ["zzz"]})
    assert (full["response"], full["done_reason"], full["eval_count"]) == (
        "The sky is blue. USER: more",
        "stop",
        6,
    )
    stopped = generate(client, prompt="sky?", options={"stop": ["USER:"]})
    assert stopped["response"] == "The sky is blue. "
    ollama_server.set_reply(MODEL, lambda prompt: f"echo: {prompt}")
    assert generate(client, prompt="ping")["response"] == "echo: ping"


def test_generate_load_unload_and_errors(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    load = client.post("/api/generate", json={"model": MODEL, "prompt": ""})
    assert load.headers["content-type"] == "application/json; charset=utf-8"
    body = load.json()
    assert (body["response"], body["done"], body["done_reason"]) == ("", True, "load")
    assert set(body) == {"model", "created_at", "response", "done", "done_reason"}
    assert ollama_server.loaded_models() == [MODEL]
    unload = client.post("/api/generate", json={"model": MODEL, "keep_alive": 0}).json()
    assert unload["done_reason"] == "unload"
    assert client.get("/api/ps").json() == {"models": []}
    cases = [
        ({"model": "nope", "prompt": "hi"}, 404, "model 'nope' not found"),
        ({"model": "", "prompt": "hi"}, 404, "model '' not found"),
        (
            {"model": MODEL, "prompt": "hi", "think": True},
            400,
            f'"{MODEL}" does not support thinking',
        ),
        (
            {"model": MODEL, "prompt": "hi", "think": "high"},
            400,
            f'"{MODEL}" does not support thinking',
        ),
        (
            {"model": MODEL, "prompt": "hi", "keep_alive": "bogus"},
            400,
            'time: invalid duration "bogus"',
        ),
        (
            {"model": MODEL, "prompt": "hi", "keep_alive": "10"},
            400,
            'time: missing unit in duration "10"',
        ),
        (
            {"model": MODEL, "prompt": "hi", "options": {"num_predict": "x"}},
            500,
            'option "num_predict" must be of type integer',
        ),
        (
            {"model": MODEL, "prompt": "hi", "options": {"num_ctx": True}},
            500,
            'option "num_ctx" must be of type integer',
        ),
        (
            {"model": MODEL, "prompt": "hi", "options": {"seed": "1"}},
            500,
            'option "seed" must be of type integer',
        ),
        (
            {"model": MODEL, "prompt": "hi", "options": {"temperature": "hot"}},
            500,
            'option "temperature" must be of type float32',
        ),
        (
            {"model": MODEL, "prompt": "hi", "options": {"stop": "x"}},
            500,
            'option "stop" must be of type array',
        ),
        (
            {"model": MODEL, "prompt": "hi", "options": {"stop": [1]}},
            500,
            'option "stop" must be of an array of strings',
        ),
        (
            {"model": MODEL, "prompt": "hi", "raw": True, "system": "x"},
            400,
            "raw mode does not support template, system, or context",
        ),
    ]
    for body, status, message in cases:
        response = client.post("/api/generate", json=body)
        assert (response.status_code, response.json()) == (status, {"error": message}), body
    # Unknown options are ignored; think:false is fine on a model without thinking.
    assert generate(client, prompt="hi", think=False, options={"not_an_option": 1})["done"]


def test_generate_with_num_predict_as_float_and_context(client: httpx.Client) -> None:
    first = generate(client, prompt="a b c", options={"num_predict": 2.7})
    assert first["eval_count"] == 2
    second = generate(client, prompt="d", context=first["context"])
    assert second["prompt_eval_count"] > len(first["context"])
    raw = generate(client, prompt="plain", raw=True)
    assert "context" not in raw


# -- §2.8 chat -------------------------------------------------------------------------------------


def test_chat_streams_messages(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    ollama_server.set_reply(MODEL, lambda last: f"you said {last}")
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}]
    messages.append({"role": "USER", "content": "second"})
    status, content_type, lines = ndjson(
        client, "/api/chat", {"model": MODEL, "messages": messages}
    )
    assert (status, content_type) == (200, "application/x-ndjson")
    *chunks, final = lines
    assert "".join(c["message"]["content"] for c in chunks) == "you said second"
    assert all(c["message"]["role"] == "assistant" and c["done"] is False for c in chunks)
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["done_reason"] == "stop"
    assert "context" not in final
    assert list(final)[:5] == ["model", "created_at", "message", "done", "done_reason"]
    assert final["eval_count"] == 3
    whole = client.post("/api/chat", json={"model": MODEL, "messages": messages, "stream": False})
    assert whole.json()["message"] == {"role": "assistant", "content": "you said second"}


def test_chat_prepends_the_model_system_prompt(client: httpx.Client) -> None:
    def count(messages: list[dict[str, str]]) -> int:
        body = {"model": MODEL, "messages": messages, "stream": False}
        return client.post("/api/chat", json=body).json()["prompt_eval_count"]

    user = {"role": "user", "content": "hi"}
    default_system = count([user])
    own_system = count([{"role": "system", "content": "short"}, user])
    # The model's 12-word system prompt is replaced by a 1-word one.
    assert default_system - own_system == 11


def test_chat_load_unload_and_errors(client: httpx.Client) -> None:
    load = client.post("/api/chat", json={"model": MODEL, "messages": []}).json()
    assert load["message"] == {"role": "assistant", "content": ""}
    assert load["done_reason"] == "load"
    unload = client.post("/api/chat", json={"model": MODEL, "messages": [], "keep_alive": 0}).json()
    assert unload["done_reason"] == "unload"
    cases = [
        ({"messages": []}, 400, "model is required"),
        ({"model": "", "messages": []}, 400, "model is required"),
        ({"model": "nope", "messages": []}, 404, "model 'nope' not found"),
        (
            {"model": MODEL, "messages": [], "tools": [{"type": "function"}]},
            400,
            f"registry.ollama.ai/library/{MODEL} does not support tools",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": 1}]},
            400,
            "json: cannot unmarshal number into Go struct field "
            "Message.messages.content of type string",
        ),
    ]
    for body, status, message in cases:
        response = client.post("/api/chat", json=body)
        assert (response.status_code, response.json()) == (status, {"error": message}), body


# -- §2.10 ps -------------------------------------------------------------------------------------


def test_ps_shows_loaded_models_until_keep_alive(client: httpx.Client) -> None:
    generate(client, prompt="hi", options={"num_ctx": 2048})
    [entry] = client.get("/api/ps").json()["models"]
    assert entry["name"] == entry["model"] == MODEL
    assert entry["size_vram"] == 0
    assert entry["context_length"] == 2048
    assert entry["details"]["parent_model"] == ""
    assert "context_length" not in entry["details"]
    assert entry["expires_at"].startswith(time.strftime("%Y", time.gmtime()))
    generate(client, prompt="hi", keep_alive=-1)
    [entry] = client.get("/api/ps").json()["models"]
    assert int(entry["expires_at"][:4]) > 2300
    generate(client, prompt="hi", keep_alive=0)
    assert client.get("/api/ps").json() == {"models": []}
    generate(client, prompt="hi", keep_alive="50ms")
    assert len(client.get("/api/ps").json()["models"]) == 1
    time.sleep(0.1)
    assert client.get("/api/ps").json() == {"models": []}


# -- §2.4 pull ------------------------------------------------------------------------------------


def test_pull_progress_sequence(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    ollama_server.add_registry_model("llama3.2:1b", layer_sizes=[5_000_000, 1_000, 7])
    status, content_type, lines = ndjson(client, "/api/pull", {"model": "llama3.2:1b"})
    assert (status, content_type) == (200, "application/x-ndjson")
    assert lines[0] == {"status": "pulling manifest"}
    assert statuses(lines)[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    progress = lines[1:-3]
    by_digest: dict[str, list[dict[str, Any]]] = {}
    for line in progress:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", line["digest"])
        assert line["status"] == f"pulling {line['digest'][7:19]}"
        by_digest.setdefault(line["digest"], []).append(line)
    assert [group[0]["total"] for group in by_digest.values()] == [5_000_000, 1_000, 7]
    for group in by_digest.values():
        assert "completed" not in group[0]
        assert group[-1]["completed"] == group[-1]["total"]
    assert len(progress) > len(by_digest)
    assert statuses(progress)[:3] != statuses(progress)[:1] * 3  # interleaved, as in parallel pulls
    pulled = ollama_server.model("llama3.2:1b")
    assert pulled.size == 5_001_007
    assert client.post("/api/show", json={"model": "llama3.2:1b"}).status_code == 200
    # Pulling again: every layer is already there, reported once with total == completed.
    _, _, again = ndjson(client, "/api/pull", {"model": "llama3.2:1b"})
    layers = [line for line in again if "digest" in line]
    assert len(layers) == 3
    assert all(line["completed"] == line["total"] for line in layers)


def test_pull_errors(client: httpx.Client) -> None:
    status, _, lines = ndjson(client, "/api/pull", {"model": "nope:1b"})
    assert status == 200
    assert lines == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    response = client.post("/api/pull", json={"model": "nope:1b", "stream": False})
    assert (response.status_code, response.headers["content-type"]) == (500, "application/json")
    assert response.json() == {"error": "pull model manifest: file does not exist"}
    invalid = client.post("/api/pull", json={"model": ""})
    assert (invalid.status_code, invalid.json()) == (400, {"error": "invalid model name"})


def test_pull_stream_false(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    ollama_server.add_registry_model("tiny:1b")
    response = client.post("/api/pull", json={"model": "tiny:1b", "stream": False})
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert ollama_server.has_model("tiny:1b")


def test_a_cancelled_pull_leaves_no_model(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    ollama_server.add_registry_model("slow:1b", layer_sizes=[1000, 10])
    ollama_server.pull_chunk_delay = 0.05
    with client.stream("POST", "/api/pull", json={"model": "slow:1b"}) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines)) == {"status": "pulling manifest"}
        next(lines)
    time.sleep(0.6)  # the pull would have finished by now
    assert not ollama_server.has_model("slow:1b")
    ollama_server.pull_chunk_delay = 0
    _, _, lines2 = ndjson(client, "/api/pull", {"model": "slow:1b"})
    assert statuses(lines2)[-1] == "success"


# -- fault switches --------------------------------------------------------------------------------


def test_fail_before_stream_applies_once(
    ollama_server: OllamaStandIn, client: httpx.Client
) -> None:
    ollama_server.fail_before_stream(
        "/api/chat", 503, "server busy, please try again.  maximum pending requests exceeded"
    )
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    status, content_type, lines = ndjson(client, "/api/chat", body)
    assert status == 503
    assert content_type.startswith("application/json")
    assert lines == [{"error": "server busy, please try again.  maximum pending requests exceeded"}]
    status, _, lines = ndjson(client, "/api/chat", body)
    assert status == 200 and lines[-1]["done"] is True


def test_fail_during_stream(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    ollama_server.set_reply(MODEL, "one two three four five")
    ollama_server.fail_during_stream(
        "/api/generate", "an error was encountered while running the model", after_lines=2
    )
    status, content_type, lines = ndjson(client, "/api/generate", {"model": MODEL, "prompt": "hi"})
    assert (status, content_type) == (200, "application/x-ndjson")
    assert [line.get("response") for line in lines[:2]] == ["one ", "two "]
    assert lines[2:] == [{"error": "an error was encountered while running the model"}]
    # More lines asked for than the stream has: the error replaces the final line.
    ollama_server.fail_during_stream("/api/generate", "boom", after_lines=50)
    _, _, lines = ndjson(client, "/api/generate", {"model": MODEL, "prompt": "hi"})
    assert len(lines) == 6 and lines[-1] == {"error": "boom"}
    # A failed pull or create stores nothing.
    ollama_server.add_registry_model("reg:1b")
    ollama_server.fail_during_stream("/api/pull", "connection reset by peer", after_lines=100)
    _, _, lines = ndjson(client, "/api/pull", {"model": "reg:1b"})
    assert lines[-1] == {"error": "connection reset by peer"}
    assert not ollama_server.has_model("reg:1b")
    ollama_server.fail_during_stream("/api/create", "disk full", after_lines=1)
    _, _, lines = ndjson(client, "/api/create", {"model": "c", "from": MODEL})
    assert len(lines) == 2 and lines[-1] == {"error": "disk full"}
    assert not ollama_server.has_model("c")
    _, _, lines = ndjson(client, "/api/generate", {"model": MODEL, "prompt": "hi"})
    assert lines[-1]["done"] is True


def test_slow_first_byte(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    ollama_server.slow_first_byte("/api/generate", 0.3)
    started = time.monotonic()
    body = generate(client, prompt="hi")
    assert time.monotonic() - started >= 0.3
    assert body["load_duration"] >= 300_000_000
    ollama_server.slow_first_byte("/api/generate", 5)
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/api/generate",
            json={"model": MODEL, "prompt": "hi"},
            timeout=httpx.Timeout(5, read=0.2),
        )
    started = time.monotonic()
    assert generate(client, prompt="hi")["done"]
    assert time.monotonic() - started < 2


def test_drop_connection(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    ollama_server.drop_connection("/api/generate", after_lines=2)
    seen: list[str] = []
    body = {"model": MODEL, "prompt": "hi"}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/api/generate", json=body) as r,
    ):
        seen.extend(r.iter_lines())
    assert len([line for line in seen if line]) == 2
    ollama_server.drop_connection("/api/tags")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/api/tags")
    ollama_server.drop_connection("/api/delete", after_lines=0)
    ollama_server.add_model("x")
    with pytest.raises(httpx.RemoteProtocolError):
        client.request("DELETE", "/api/delete", json={"model": "x"})
    assert client.get("/api/tags").status_code == 200
    assert generate(client, prompt="hi")["done"]


def test_faults_combine_on_one_request(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    ollama_server.slow_first_byte("/api/show", 0.1)
    ollama_server.fail_before_stream("/api/show", 500, "boom")
    started = time.monotonic()
    response = client.post("/api/show", json={"model": MODEL})
    assert time.monotonic() - started >= 0.1
    assert (response.status_code, response.json()) == (500, {"error": "boom"})
    assert client.post("/api/show", json={"model": MODEL}).status_code == 200


# -- connections, lifecycle, threads ---------------------------------------------------------------


def test_client_disconnect_mid_stream_is_quiet(
    ollama_server: OllamaStandIn, client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    ollama_server.token_delay = 0.05
    ollama_server.set_reply(MODEL, " ".join(["word"] * 40))
    with client.stream(
        "POST", "/api/chat", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    ) as r:
        first = json.loads(next(r.iter_lines()))
        assert first["done"] is False
    ollama_server.token_delay = 0
    assert generate(client, prompt="again")["done"]
    time.sleep(0.2)
    assert capsys.readouterr().err == ""


def test_stop_and_start_rebind_the_same_port(ollama_server: OllamaStandIn) -> None:
    url = ollama_server.url
    with httpx.Client(base_url=url, timeout=5, verify=SSL_CONTEXT) as c:
        assert c.get("/api/version").status_code == 200
        ollama_server.stop()
        with pytest.raises(httpx.ConnectError):
            c.get("/api/version")
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/api/version", verify=SSL_CONTEXT)
        ollama_server.start()
        assert ollama_server.url == url
        assert c.get("/api/version").status_code == 200
        assert MODEL in [m["name"] for m in c.get("/api/tags").json()["models"]]


def test_stop_cuts_an_open_stream(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    ollama_server.token_delay = 0.05
    ollama_server.set_reply(MODEL, " ".join(["word"] * 100))
    stopper = threading.Thread(target=ollama_server.stop)
    body = {"model": MODEL, "prompt": "x"}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/api/generate", json=body) as r,
    ):
        for index, _line in enumerate(r.iter_lines()):
            if index == 1:
                stopper.start()
    stopper.join()
    assert not ollama_server.running
    ollama_server.start()
    ollama_server.token_delay = 0
    assert generate(client, prompt="back")["done"]


def test_keep_alive_connections_are_reused(ollama_server: OllamaStandIn) -> None:
    with socket.create_connection(("127.0.0.1", ollama_server.port), timeout=5) as sock:
        request = b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        sock.sendall(request + request)
        data = b""
        while data.count(b'{"version":"0.12.6"}') < 2:
            chunk = sock.recv(4096)
            assert chunk
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2


def test_requests_are_recorded(ollama_server: OllamaStandIn, client: httpx.Client) -> None:
    client.post("/api/show", json={"model": MODEL}, headers={"X-Test": "1"})
    recorded = ollama_server.requests[-1]
    assert (recorded.method, recorded.path, recorded.json) == (
        "POST",
        "/api/show",
        {"model": MODEL},
    )
    assert recorded.headers["x-test"] == "1"
    client.get("/api/tags?x=1")
    assert ollama_server.requests[-1].path == "/api/tags"
    upload(client, b"abc")
    assert (ollama_server.requests[-1].json, ollama_server.requests[-1].body_size) == (None, 3)


def test_concurrent_requests(ollama_server: OllamaStandIn) -> None:
    def work(index: int) -> str:
        with httpx.Client(base_url=ollama_server.url, timeout=10, verify=SSL_CONTEXT) as c:
            if index % 3 == 0:
                c.post("/api/copy", json={"source": MODEL, "destination": f"copy-{index}"})
            return generate(c, prompt=f"prompt {index}")["response"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(work, range(24)))
    assert len(set(replies)) > 1
    assert len(ollama_server.model_names()) == 1 + 8


def test_context_manager_and_close() -> None:
    server = OllamaStandIn(version="0.0.0")
    with server:
        assert httpx.get(server.url + "/api/version", verify=SSL_CONTEXT).json() == {
            "version": "0.0.0"
        }
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/api/version", verify=SSL_CONTEXT)
    root = server.root
    server.close()
    assert not root.exists()
