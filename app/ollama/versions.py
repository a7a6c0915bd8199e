"""Which Ollama versions the app works with (OLLAMA_API.md §5).

`/api/version` reports `x.y.z`, a release candidate `0.33.0-rc2`, and a development build `0.0.0`.
A development build is built from recent sources, so it counts as new enough; so does a version
string that cannot be read at all (a fork's own scheme): the calls themselves then find out.
"""

from __future__ import annotations

import re

from app.ollama.errors import OllamaTooOld

Version = tuple[int, int, int]

# The JSON form of /api/create (`from`, `files`, `adapters`) arrived in v0.5.5; before it the app
# cannot create models at all.
MIN_VERSION: Version = (0, 5, 5)
# Below v0.6.7 the default context is 2048 tokens, and several fixes the app relies on are missing.
WARN_BELOW: Version = (0, 6, 7)
# A third-party report says v0.34.1 removed creating LoRA-adapter models (unverified): from this
# version on, try the adapter create and be ready to fall back to a merged import.
ADAPTER_CREATE_MAYBE_REMOVED: Version = (0, 34, 1)

_VERSION = re.compile(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(version: str) -> Version:
    """`(major, minor, patch)` of a version string; a suffix such as `-rc2` is ignored.

    Raises ValueError when the string does not start with a number.
    """
    match = _VERSION.match(version)
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    major, minor, patch = (int(part) if part else 0 for part in match.groups())
    return major, minor, patch


def format_version(version: Version) -> str:
    """`0.5.5` for `(0, 5, 5)`."""
    return ".".join(str(part) for part in version)


def is_development(version: str) -> bool:
    """Whether the server is a development build (`0.0.0`) or says nothing readable."""
    try:
        return parse_version(version) == (0, 0, 0)
    except ValueError:
        return True


def is_at_least(version: str, minimum: Version) -> bool:
    """Whether `version` is `minimum` or newer; a development build always is."""
    return is_development(version) or parse_version(version) >= minimum


def check_supported(version: str, url: str) -> None:
    """Raise OllamaTooOld when the server at `url` is older than MIN_VERSION."""
    if not is_at_least(version, MIN_VERSION):
        raise OllamaTooOld(
            f"Ollama {version} at {url} is too old; this app needs "
            f"{format_version(MIN_VERSION)} or newer: update Ollama."
        )


def upgrade_advice(version: str, url: str) -> str | None:
    """A sentence recommending an update when the server works but is older than WARN_BELOW."""
    if is_at_least(version, WARN_BELOW):
        return None
    return (
        f"Ollama {version} at {url} works but is old (its default context is 2048 tokens); "
        f"updating to {format_version(WARN_BELOW)} or newer is recommended."
    )


def adapter_create_may_be_missing(version: str) -> bool:
    """Whether this version may no longer create models with `adapters` (see above).

    A development build says yes: it is built from the newest sources.
    """
    return is_at_least(version, ADAPTER_CREATE_MAYBE_REMOVED)
