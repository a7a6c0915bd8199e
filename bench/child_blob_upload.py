"""Uploading a 1 GB blob: the app's client against a bare streamed httpx upload.

The stand-in Ollama server runs in its own process (it hashes what it receives, as Ollama does).
Both uploads send the same file in 1 MiB pieces with its digest known, so what is compared is
the upload itself; the client's own hashing (in a worker thread), and hashing then uploading as
publishing does, are reported apart. Each run
removes the stored blob first, so that the server takes the whole body every time. The peak
resident memory of this process is reported before and after, to show the upload is streamed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, child_env, median, peak_rss_mb

SIZE = int(os.environ.get("MTM_BENCH_BLOB_BYTES", str(1 << 30)))
CHUNK = 1 << 20
RUNS = 3
SERVER = """
import sys
from pathlib import Path
from tests.ollama_server import OllamaStandIn
server = OllamaStandIn(root=Path(sys.argv[1])).start()
print(server.url, flush=True)
sys.stdin.read()
server.stop()
"""


def make_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for _ in range(SIZE // CHUNK):
            piece = os.urandom(CHUNK)
            digest.update(piece)
            file.write(piece)
    return f"sha256:{digest.hexdigest()}"


async def bare_upload(url: str, path: Path, digest: str) -> float:
    import httpx

    async def body():  # type: ignore[no-untyped-def]
        with path.open("rb") as file:
            while piece := file.read(CHUNK):
                yield piece

    async with httpx.AsyncClient(base_url=url, timeout=None) as client:
        start = time.perf_counter()
        response = await client.post(
            f"/api/blobs/{digest}", content=body(), headers={"Content-Length": str(SIZE)}
        )
        elapsed = time.perf_counter() - start
    assert response.status_code == 201, response.text
    return elapsed


async def client_upload(url: str, path: Path, digest: str | None) -> float:
    """push_blob as publishing calls it; with `digest` None it hashes the file first."""
    from app.ollama.client import OllamaClient

    async with OllamaClient(url) as client:
        start = time.perf_counter()
        pushed = await client.push_blob(path, digest=digest)
        elapsed = time.perf_counter() - start
    assert digest is None or pushed == digest
    return elapsed


async def client_hash(path: Path) -> float:
    from app.ollama.client import sha256_digest

    start = time.perf_counter()
    await asyncio.to_thread(sha256_digest, path)
    return time.perf_counter() - start


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mtm-blob-") as folder:
        root = Path(folder)
        path = root / "blob.bin"
        digest = make_file(path)
        stored = root / "store" / "blobs" / digest.replace(":", "-")
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(root / "store")],
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdin is not None
        url = server.stdout.readline().strip()
        try:
            before = peak_rss_mb()
            bare, ours = [], []
            for _ in range(RUNS):
                for times, upload in ((bare, bare_upload), (ours, client_upload)):
                    stored.unlink(missing_ok=True)
                    times.append(asyncio.run(upload(url, path, digest)))
            after = peak_rss_mb()
            hashing = asyncio.run(client_hash(path))
            stored.unlink(missing_ok=True)
            whole = asyncio.run(client_upload(url, path, None))
        finally:
            server.stdin.close()
            server.wait(timeout=30)
    mb = SIZE / 1e6
    report = {
        "bytes": SIZE,
        "bare_mb_per_s": mb / median(bare),
        "client_mb_per_s": mb / median(ours),
        "ratio": median(bare) / median(ours),
        "hash_mb_per_s": mb / hashing,
        "hash_and_upload_mb_per_s": mb / whole,
        "peak_rss_mb_before": before,
        "peak_rss_mb": after,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
