"""The clusters a job can target, kept in the settings table; their tokens in the OS keyring.

The database holds a cluster's name, dashboard URL, storage, the resources a job asks for and,
optionally, the environment variable its token can be read from; never the token itself, which
`keyring` keeps in the OS's credential store. Where there is no such store (a headless Linux
box), the token is read from that variable each time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app import APP_ID
from app.db.models import Setting
from app.db.session import Database
from app.errors import NotFoundError
from app.executors.errors import BadClusterError
from app.executors.ray_client import normalise_url
from app.executors.storage import open_storage

log = logging.getLogger(__name__)

SETTINGS_KEY = "clusters"  # a row of its own: AppSettings (the Settings tab) does not read it
KEYRING_SERVICE = APP_ID
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Cluster(BaseModel):
    """A Ray cluster jobs can run on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    url: str = Field(description="The Ray dashboard, http(s)://head:8265.")
    storage: str = Field(description="A folder both sides mount, or s3://bucket/prefix.")
    token_env: str | None = Field(None, description="The variable the token can be read from.")
    gpus: float = Field(0, ge=0, le=1024, description="GPUs a job asks for.")
    cpus: float = Field(1, ge=0, le=4096, description="CPUs a job asks for.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use letters, digits, '.', '_' or '-' (up to 63), e.g. lab-gpu")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return normalise_url(value)

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, value: str) -> str:
        return open_storage(value).url

    @field_validator("token_env")
    @classmethod
    def _check_env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("give the name of an environment variable, e.g. RAY_TOKEN")
        return value


def make_cluster(**fields: object) -> Cluster:
    """A validated Cluster, or BadClusterError naming the field that is wrong (the URL's and
    the storage's checks raise their own sentence)."""
    try:
        return Cluster.model_validate(fields)
    except ValidationError as error:
        item = error.errors()[0]
        field = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        raise BadClusterError(f"The cluster's {field} is not valid: {message}.") from None


class ClusterStore:
    """Adds, lists and removes clusters; hands out their tokens."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def all(self) -> list[Cluster]:
        with self._database.session() as session:
            row = session.get(Setting, SETTINGS_KEY)
            raw = row.value if row is not None else "[]"
        return [cluster for item in _decode(raw) if (cluster := _valid(item)) is not None]

    def get(self, name: str) -> Cluster:
        for cluster in self.all():
            if cluster.name == name:
                return cluster
        raise NotFoundError(
            f"There is no cluster '{name}'; `mtm clusters list` shows them, "
            "`mtm clusters add` adds one."
        )

    def exists(self, name: str) -> bool:
        return any(cluster.name == name for cluster in self.all())

    def add(self, cluster: Cluster, token: str | None = None) -> bool:
        """Add or replace `cluster`; keep `token` in the keyring. Returns whether the keyring
        took it (False: the token is read from the cluster's token_env each time)."""
        kept = True if token is None else _keep_token(cluster.name, token)
        others = [c for c in self.all() if c.name != cluster.name]
        self._save([*others, cluster])
        return kept

    def remove(self, name: str) -> Cluster:
        cluster = self.get(name)
        self._save([c for c in self.all() if c.name != name])
        _forget_token(name)
        return cluster

    def token(self, cluster: Cluster) -> str | None:
        """The keyring's token, else the one in the cluster's variable, else None."""
        token = _stored_token(cluster.name)
        if token is None and cluster.token_env:
            token = os.environ.get(cluster.token_env) or None
        return token

    def token_source(self, cluster: Cluster) -> str:
        """Where the cluster's token comes from, in a few words: `keyring`, `from $VAR`
        (`(not set)` when the variable is empty), or `none`. Asks the keyring, which can wait on
        D-Bus: call it off the GUI thread."""
        if _stored_token(cluster.name) is not None:
            return "keyring"
        if cluster.token_env:
            unset = "" if os.environ.get(cluster.token_env) else " (not set)"
            return f"from ${cluster.token_env}{unset}"
        return "none"

    def check(self, name: str) -> str:
        """What the cluster's head answers (`Ray 2.60.0 (Jobs API 4)`), once its storage has been
        written to; ExecutorError in one sentence otherwise. Blocks on the network."""
        from app.executors.ray import open_executor

        cluster = self.get(name)
        executor = open_executor(cluster, self.token(cluster))
        try:
            return executor.check()
        finally:
            executor.close()

    def _save(self, clusters: list[Cluster]) -> None:
        ordered = sorted(clusters, key=lambda c: c.name)
        encoded = orjson.dumps([c.model_dump(mode="json") for c in ordered]).decode()
        with self._database.session() as session:
            row = session.get(Setting, SETTINGS_KEY)
            if row is None:
                session.add(Setting(key=SETTINGS_KEY, value=encoded))
            else:
                row.value = encoded


def _decode(raw: str) -> list[object]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("the stored clusters are not JSON; ignoring them")
        return []
    return data if isinstance(data, list) else []


def _valid(item: object) -> Cluster | None:
    try:
        return Cluster.model_validate(item)
    except (ValidationError, BadClusterError):
        log.warning("a stored cluster no longer validates; ignoring it", extra={"item": item})
        return None


def _account(name: str) -> str:
    return f"ray-cluster:{name}"


def _keep_token(name: str, token: str) -> bool:
    import keyring
    from keyring.errors import KeyringError

    try:
        keyring.set_password(KEYRING_SERVICE, _account(name), token)
    except KeyringError:
        log.warning("no OS keyring to keep the cluster token", extra={"cluster": name})
        return False
    return True


def _stored_token(name: str) -> str | None:
    import keyring
    from keyring.errors import KeyringError

    try:
        return keyring.get_password(KEYRING_SERVICE, _account(name))
    except KeyringError:
        return None


def _forget_token(name: str) -> None:
    import keyring
    from keyring.errors import KeyringError, PasswordDeleteError

    # There was none, or there is no keyring at all: nothing to forget either way.
    with contextlib.suppress(PasswordDeleteError, KeyringError):
        keyring.delete_password(KEYRING_SERVICE, _account(name))
