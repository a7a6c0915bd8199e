"""The `mtm` command line: everything the window does with datasets and settings, headless.

Exit codes: 0 done, 2 usage, 3 bad input (one sentence on stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.cli_clusters import add_cluster_commands
from app.cli_jobs import add_job_commands
from app.cli_ollama import add_ollama_commands
from app.cli_output import print_json
from app.errors import BadInputError, KnownError
from app.settings import flatten, validate_settings

SUBCOMMANDS = ("datasets", "jobs", "worker", "settings", "ollama", "clusters")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_BAD_INPUT = 0, 1, 2, 3

Handler = Callable[[argparse.Namespace], int]


def is_cli_invocation(argv: Sequence[str]) -> bool:
    """True when `argv` names a subcommand (after any `--home DIR`)."""
    words = list(argv)
    while words and words[0].startswith("-"):
        flag = words.pop(0)
        if flag == "--home" and words:
            words.pop(0)
    return bool(words) and words[0] in SUBCOMMANDS


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help="data folder ($MTM_HOME)")
    parser = argparse.ArgumentParser(
        prog="mtm", parents=[common], description="Model Training Manager, headless."
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    _add_dataset_commands(groups, common)
    add_job_commands(groups, common)
    add_ollama_commands(groups, common)
    add_cluster_commands(groups, common)
    _add_settings_commands(groups, common)
    return parser


def _add_dataset_commands(groups: Any, common: argparse.ArgumentParser) -> None:
    datasets = groups.add_parser("datasets", help="import, list, show and delete datasets")
    commands = datasets.add_subparsers(dest="command", required=True, metavar="ACTION")
    imp = commands.add_parser("import", parents=[common], help="import a dataset file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--name", help="display name (default: the file's name)")
    imp.add_argument("--format", dest="format", help="alpaca, sharegpt, messages, ...")
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="take a format's field from a column, e.g. --map instruction=question",
    )
    imp.add_argument("--skip-invalid", action="store_true", help="skip records that do not fit")
    imp.add_argument("--validation-fraction", type=float, default=None)
    imp.add_argument("--seed", type=int, default=None, help="seed of the train/validation split")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(handler=_datasets_import)
    lst = commands.add_parser("list", parents=[common], help="list datasets")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=_datasets_list)
    show = commands.add_parser("show", parents=[common], help="show one dataset")
    show.add_argument("id")
    show.add_argument("--preview", type=int, default=0, metavar="N", help="print N records")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_datasets_show)
    rename = commands.add_parser("rename", parents=[common], help="rename a dataset")
    rename.add_argument("id")
    rename.add_argument("name")
    rename.add_argument("--json", action="store_true")
    rename.set_defaults(handler=_datasets_rename)
    split = commands.add_parser("split", parents=[common], help="set the validation split")
    split.add_argument("id")
    split.add_argument("--validation-fraction", type=float, required=True)
    split.add_argument("--seed", type=int, default=42)
    split.add_argument("--json", action="store_true")
    split.set_defaults(handler=_datasets_split)
    delete = commands.add_parser("delete", parents=[common], help="delete a dataset and its files")
    delete.add_argument("id")
    delete.add_argument("--json", action="store_true")
    delete.set_defaults(handler=_datasets_delete)


def _add_settings_commands(groups: Any, common: argparse.ArgumentParser) -> None:
    settings = groups.add_parser("settings", help="show or change settings")
    commands = settings.add_subparsers(dest="command", required=True, metavar="ACTION")
    show = commands.add_parser("show", parents=[common], help="print the settings")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_settings_show)
    change = commands.add_parser("set", parents=[common], help="change one setting")
    change.add_argument("key", help="e.g. ollama_url or hyperparameters.epochs")
    change.add_argument("value")
    change.set_defaults(handler=_settings_set)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    from app.context import AppContext

    try:
        context = AppContext.open(getattr(args, "home", None))
    except KnownError as error:
        print(error.message, file=sys.stderr)
        return error.exit_code
    args.context = context
    try:
        handler: Handler = args.handler
        return handler(args)
    except KnownError as error:
        print(error.message, file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("Interrupted; nothing was changed.", file=sys.stderr)
        return 130
    finally:
        context.close()


# --- datasets -------------------------------------------------------------------------------


def _parse_mapping(pairs: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise BadInputError(
                f"--map {pair!r} is not FIELD=COLUMN; write e.g. --map output=answer."
            )
        mapping[field.strip()] = column.strip()
    return mapping


def _datasets_import(args: argparse.Namespace) -> int:
    from app.datasets.importer import ImportOptions, import_dataset

    settings = args.context.settings.load()
    fraction = args.validation_fraction
    options = ImportOptions(
        name=args.name,
        format=args.format,
        mapping=_parse_mapping(args.map),
        skip_invalid=args.skip_invalid,
        size_limit_bytes=settings.import_size_limit_bytes,
        validation_fraction=(
            settings.hyperparameters.eval_fraction if fraction is None else fraction
        ),
        split_seed=settings.hyperparameters.seed if args.seed is None else args.seed,
    )
    dataset = import_dataset(args.context.database, args.context.home, args.file, options)
    summary = dataset_summary(dataset, args.context)
    if args.json:
        print_json(summary)
    else:
        skipped = f", {dataset.invalid_rows} invalid skipped" if dataset.invalid_rows else ""
        print(
            f"Imported {dataset.name!r} as {dataset.id}: {dataset.rows} records, "
            f"format {dataset.format}{skipped}."
        )
    return EXIT_OK


def _datasets_list(args: argparse.Namespace) -> int:
    from app.datasets.repository import list_datasets

    datasets = list_datasets(args.context.database)
    if args.json:
        print_json([dataset_summary(d, args.context) for d in datasets])
        return EXIT_OK
    if not datasets:
        print("No datasets yet; import one with: mtm datasets import FILE")
        return EXIT_OK
    print(f"{'ID':<13} {'FORMAT':<18} {'ROWS':>9}  NAME")
    for d in datasets:
        print(f"{d.id:<13} {d.format:<18} {d.rows:>9}  {d.name}")
    return EXIT_OK


def _datasets_show(args: argparse.Namespace) -> int:
    from app.datasets.repository import get_dataset

    if args.preview < 0:
        raise BadInputError("--preview must be 0 or more records.")
    dataset = get_dataset(args.context.database, args.id)
    summary = dataset_summary(dataset, args.context, with_stats=True)
    if args.preview:
        summary["preview"] = _preview(args.context, dataset, args.preview)
    if args.json:
        print_json(summary)
    else:
        _print_summary(summary)
    return EXIT_OK


def _datasets_rename(args: argparse.Namespace) -> int:
    from app.datasets.repository import get_dataset, rename_dataset

    dataset = get_dataset(args.context.database, args.id)
    dataset = rename_dataset(args.context.database, dataset.id, args.name)
    if args.json:
        print_json(dataset_summary(dataset, args.context))
    else:
        print(f"Renamed {dataset.id} to {dataset.name!r}.")
    return EXIT_OK


def _datasets_split(args: argparse.Namespace) -> int:
    from app.datasets.repository import get_dataset, set_split

    if not 0 <= args.validation_fraction <= 0.5:
        raise BadInputError("--validation-fraction must be between 0 and 0.5.")
    dataset = get_dataset(args.context.database, args.id)
    dataset = set_split(
        args.context.database, args.context.home, dataset.id, args.validation_fraction, args.seed
    )
    if args.json:
        print_json(dataset_summary(dataset, args.context))
    else:
        print(f"{dataset.name!r}: {dataset.validation_rows} of {dataset.rows} records held out.")
    return EXIT_OK


def _datasets_delete(args: argparse.Namespace) -> int:
    from app.datasets.repository import delete_dataset, get_dataset

    dataset = get_dataset(args.context.database, args.id)
    summary = dataset_summary(dataset, args.context)
    delete_dataset(args.context.database, args.context.home, dataset.id)
    if args.json:
        print_json({**summary, "deleted": True})
    else:
        print(f"Deleted {dataset.name!r} ({dataset.id}) and its files.")
    return EXIT_OK


def dataset_summary(dataset: Any, context: Any, *, with_stats: bool = False) -> dict[str, Any]:
    """The JSON shape of a dataset in `mtm datasets ... --json`."""
    summary: dict[str, Any] = {
        "id": dataset.id,
        "name": dataset.name,
        "format": dataset.format,
        "container": dataset.container,
        "source_name": dataset.source_name,
        "rows": dataset.rows,
        "invalid_rows": dataset.invalid_rows,
        "empty_rows": dataset.empty_rows,
        "duplicate_rows": dataset.duplicate_rows,
        "validation_rows": dataset.validation_rows,
        "validation_fraction": dataset.validation_fraction,
        "split_seed": dataset.split_seed,
        "size_bytes": dataset.size_bytes,
        "columns": dataset.columns,
        "created_at": dataset.created_at.isoformat(),
        "path": str(context.home.dataset_dir(dataset.id)),
    }
    if with_stats:
        summary["column_mapping"] = dataset.column_mapping
        summary["sha256"] = dataset.sha256
        summary["stats"] = dataset.stats
    return summary


def _preview(context: Any, dataset: Any, count: int) -> list[dict[str, Any]]:
    from app.datasets.preview import RecordPager
    from app.datasets.repository import dataset_files

    files = dataset_files(context.home, dataset)
    originals = RecordPager(files.source).read(count)
    normalised = RecordPager(files.records).read(count)
    return [{"original": o, "normalised": n} for o, n in zip(originals, normalised, strict=False)]


def _print_summary(summary: dict[str, Any]) -> None:
    for key, value in summary.items():
        if key in ("stats", "preview"):
            continue
        print(f"{key:>20}: {value}")
    stats = summary.get("stats") or {}
    for key, value in stats.items():
        print(f"{key:>20}: {json.dumps(value, ensure_ascii=False)}")
    for number, pair in enumerate(summary.get("preview", []), start=1):
        print(f"\n--- record {number}")
        print("original:   " + json.dumps(pair["original"], ensure_ascii=False))
        print("normalised: " + json.dumps(pair["normalised"], ensure_ascii=False))


# --- settings -------------------------------------------------------------------------------


def _settings_show(args: argparse.Namespace) -> int:
    data = args.context.settings.load().model_dump(mode="json")
    if args.json:
        print_json(data)
    else:
        for key, value in flatten(data).items():
            print(f"{key} = {value}")
    return EXIT_OK


def _settings_set(args: argparse.Namespace) -> int:
    data = args.context.settings.load().model_dump(mode="json")
    flat = flatten(data)
    if args.key not in flat:
        known = ", ".join(sorted(flat))
        raise BadInputError(f"There is no setting {args.key!r}; the settings are: {known}.")
    _assign(data, args.key, _parse_value(args.value))
    settings, errors = validate_settings(data)
    if settings is None:
        raise BadInputError(f"{args.key}: {errors.get(args.key, next(iter(errors.values())))}")
    args.context.settings.save(settings)
    print(f"{args.key} = {flatten(settings.model_dump(mode='json'))[args.key]}")
    return EXIT_OK


def _assign(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data[part]
    data[last] = value


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
