"""How every `mtm` subcommand answers: one JSON value with --json, else lines for a person."""

from __future__ import annotations

import argparse
import json
from typing import Any


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def answer(args: argparse.Namespace, value: Any, *lines: str) -> int:
    """Print `value` as JSON (--json) or `lines`; the exit code of a command that succeeded."""
    if getattr(args, "json", False):
        print_json(value)
    else:
        for line in lines:
            print(line)
    return 0
