"""The `mtm clusters ...` commands: the Ray clusters a job can target with `--target NAME`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from app.cli_output import answer
from app.errors import BadInputError


def add_cluster_commands(groups: Any, common: argparse.ArgumentParser) -> None:
    clusters = groups.add_parser("clusters", help="add, list, check and remove Ray clusters")
    commands = clusters.add_subparsers(dest="command", required=True, metavar="ACTION")
    add = commands.add_parser("add", parents=[common], help="add (or replace) a cluster")
    add.add_argument("name")
    add.add_argument("--url", required=True, help="the Ray dashboard, e.g. http://head:8265")
    add.add_argument(
        "--storage", required=True, help="a folder both sides mount, or s3://bucket/prefix"
    )
    add.add_argument(
        "--token-env",
        metavar="VAR",
        help="read the token from $VAR (kept in the OS keyring, never in the database)",
    )
    add.add_argument("--gpus", type=float, default=0, help="GPUs a job asks for (default 0)")
    add.add_argument("--cpus", type=float, default=1, help="CPUs a job asks for (default 1)")
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=_clusters_add)
    listing = commands.add_parser("list", parents=[common], help="list the clusters")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_clusters_list)
    for action, text, handler in (
        ("check", "check that the cluster answers and its storage can be written", _clusters_check),
        ("remove", "forget a cluster and its token", _clusters_remove),
    ):
        command = commands.add_parser(action, parents=[common], help=text)
        command.add_argument("name")
        command.add_argument("--json", action="store_true")
        command.set_defaults(handler=handler)


def _clusters_add(args: argparse.Namespace) -> int:
    from app.executors.clusters import ClusterStore, make_cluster

    token = _token_from(args.token_env)
    cluster = make_cluster(
        name=args.name,
        url=args.url,
        storage=args.storage,
        token_env=args.token_env,
        gpus=args.gpus,
        cpus=args.cpus,
    )
    kept = ClusterStore(args.context.database).add(cluster, token)
    _warn_if_insecure(cluster.url)
    if token is not None and not kept:
        print(
            f"No OS keyring is available here, so the token is read from ${args.token_env} "
            "each time: set it wherever the app runs.",
            file=sys.stderr,
        )
    summary = {**_summary(cluster), "token_in_keyring": bool(token) and kept}
    text = f"Added cluster {cluster.name} ({cluster.url}, storage {cluster.storage})."
    return answer(args, summary, text)


def _clusters_list(args: argparse.Namespace) -> int:
    from app.executors.clusters import ClusterStore

    clusters = ClusterStore(args.context.database).all()
    if args.json:
        return answer(args, [_summary(c) for c in clusters])
    if not clusters:
        print("No clusters yet; add one with: mtm clusters add NAME --url URL --storage PATH")
    for c in clusters:
        print(f"{c.name:<16} {c.url:<32} gpus {c.gpus:g} cpus {c.cpus:g}  {c.storage}")
    return 0


def _clusters_check(args: argparse.Namespace) -> int:
    from app.executors.clusters import ClusterStore

    store = ClusterStore(args.context.database)
    cluster = store.get(args.name)
    _warn_if_insecure(cluster.url)
    server = store.check(cluster.name)
    summary = {**_summary(cluster), "ok": True, "server": server}
    return answer(
        args, summary, f"Cluster {cluster.name} answers: {server}; its storage can be written."
    )


def _clusters_remove(args: argparse.Namespace) -> int:
    from app.executors.clusters import ClusterStore

    cluster = ClusterStore(args.context.database).remove(args.name)
    removed = {**_summary(cluster), "removed": True}
    return answer(args, removed, f"Removed cluster {cluster.name} and its token.")


def _token_from(variable: str | None) -> str | None:
    if variable is None:
        return None
    token = os.environ.get(variable, "").strip()
    if not token:
        raise BadInputError(
            f"--token-env {variable}: ${variable} is not set; export the cluster's token in it "
            "and run the command again."
        )
    return token


def _warn_if_insecure(url: str) -> None:
    from app.executors.ray_client import insecure

    if insecure(url):
        print(
            f"Warning: {url} is plain http to another machine, so the token and data cross the "
            "network unencrypted; put an https proxy in front of the head.",
            file=sys.stderr,
        )


def _summary(cluster: Any) -> dict[str, Any]:
    """The JSON shape of a cluster in `mtm clusters ... --json` (never its token)."""
    return {
        "name": cluster.name,
        "url": cluster.url,
        "storage": cluster.storage,
        "token_env": cluster.token_env,
        "gpus": cluster.gpus,
        "cpus": cluster.cpus,
    }
