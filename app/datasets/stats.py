"""Statistics of a dataset, gathered while its records stream past (nothing but lengths is kept)."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from typing import Any

from app.datasets.formats import Record

# Characters per record, log-spaced (powers of two) so that short and long records both show;
# the last bin also holds everything longer than its left edge.
HISTOGRAM_EDGES = [0, *(2**power for power in range(4, 21))]
CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text with BPE tokenizers


class StatsCollector:
    """Counts and lengths of canonical records, added one at a time."""

    def __init__(self) -> None:
        self.lengths = array("q")
        self.role_counts: Counter[str] = Counter()
        self.empty_rows = 0
        self.duplicate_rows = 0
        self.records_with_tools = 0
        self._seen: set[int] = set()
        self._roles: list[str] = []  # roles of the current chunk, counted by add_encoded

    def add(self, record: Record) -> None:
        """Count one canonical record (its duplicates are counted by `add_encoded`).

        This sees every record of files with millions of them: locals, no per-record objects
        that outlive the call (they would make the garbage collector walk them).
        """
        messages = record.get("messages")
        if messages is None:
            text = record["text"]
            self.lengths.append(len(text))
            if not text or text.isspace():
                self.empty_rows += 1
            return
        characters, trainable, roles = 0, False, self._roles
        for message in messages:
            content, role = message["content"], message["role"]
            characters += len(content)
            roles.append(role)
            if not trainable and role == "assistant" and content and not content.isspace():
                trainable = message.get("loss_weight", 1.0) != 0
        self.lengths.append(characters)
        if not trainable:
            self.empty_rows += 1
        if "tools" in record:
            self.records_with_tools += 1

    def add_encoded(self, encoded: list[bytes]) -> None:
        """Count duplicates among a chunk of canonical JSON lines (and fold in its roles)."""
        seen = self._seen
        unique_before = len(seen)
        seen.update(map(hash, encoded))
        self.duplicate_rows += len(encoded) - (len(seen) - unique_before)
        self.role_counts.update(Counter(self._roles))
        self._roles.clear()

    def summary(self) -> dict[str, Any]:
        """The statistics as JSON-ready values."""
        return {
            "empty_rows": self.empty_rows,
            "duplicate_rows": self.duplicate_rows,
            "records_with_tools": self.records_with_tools,
            "role_counts": dict(sorted(self.role_counts.items())),
            **length_summary(self.lengths),
        }


def length_summary(lengths: array[int]) -> dict[str, Any]:
    """Characters and approximate tokens per record, and a histogram of characters."""
    import numpy as np

    characters = np.frombuffer(lengths, dtype=np.int64) if len(lengths) else np.zeros(1, np.int64)
    tokens = -(-characters // CHARS_PER_TOKEN)  # ceil without floats
    return {
        "characters": _distribution(characters),
        "tokens_approx": _distribution(tokens),
        "tokens_approx_total": int(tokens.sum()),
        "histogram": _histogram(characters),
    }


def _distribution(values: Any) -> dict[str, float | int]:
    import numpy as np

    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "min": int(values.min()),
        "mean": round(float(values.mean()), 1),
        "p50": round(float(p50), 1),
        "p90": round(float(p90), 1),
        "p99": round(float(p99), 1),
        "max": int(values.max()),
    }


def _histogram(characters: Any) -> dict[str, Any]:
    import numpy as np

    bins = np.searchsorted(HISTOGRAM_EDGES, characters, side="right") - 1
    counts = np.bincount(bins, minlength=len(HISTOGRAM_EDGES))
    # One bin per pair of edges; values past the last edge join the last bin.
    counts[-2] += counts[-1]
    return {
        "unit": "characters",
        "scale": "log2",
        "edges": HISTOGRAM_EDGES,
        "counts": [int(count) for count in counts[:-1]],
    }


def approximate_tokens(characters: int) -> int:
    return math.ceil(characters / CHARS_PER_TOKEN)
