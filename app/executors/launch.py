"""`python -m app.executors.launch s3://bucket/prefix JOB_ID`: a bucket job, on the cluster.

The trainer reads and writes a folder, so this brings the job's folder from the bucket to a local
one, runs the trainer there (its events go to this process's stdout, the driver log the app
reads), and sends everything the run wrote back to the bucket, checkpoints included, so that a
resume finds them. A stop signals this process and the trainer alike (Ray signals every
descendant): the trainer checkpoints and ends, and this one still uploads before it exits.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from app.executors.storage import BucketStorage


def main(argv: list[str] | None = None) -> int:
    bucket_url, job_id = (sys.argv[1:] if argv is None else argv)[:2]
    storage = BucketStorage(bucket_url)
    # The trainer handles the stop; this process must live on to upload what it saved.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with tempfile.TemporaryDirectory(prefix=f"mtm-{job_id}-") as temporary:
        folder = Path(temporary)
        storage.download_job(job_id, folder)
        status = subprocess.call(
            [sys.executable, "-m", "app.training", "--job-dir", str(folder)],
            # The child gets the default handlers back, so the stop reaches the trainer.
            preexec_fn=_default_signals if sys.platform != "win32" else None,
        )
        storage.upload_job(job_id, folder)
    return status


def _default_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
