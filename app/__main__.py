"""`python -m app`: the window by default, `--smoke` to open it and exit after the first paint,
or a subcommand (`python -m app datasets list`) for the headless `mtm` CLI."""

from __future__ import annotations

import argparse
import sys


def _gui_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description="Model Training Manager")
    parser.add_argument("--home", help="data folder (default: $MTM_HOME or the per-user folder)")
    parser.add_argument(
        "--smoke", action="store_true", help="open the window, wait for its first paint, exit 0"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--run-import"]:  # a child process of the window (app.datasets.import_process)
        from app.datasets.import_process import child_main

        return child_main()
    if args[:1] == ["--run-training"]:  # the trainer subprocess (app.workers.runner starts it)
        from app.training.__main__ import main as training_main

        return training_main(args[1:])
    if args[:1] == ["--run-merge"]:  # publishing a job whose adapter Ollama cannot take
        from app.training.merge import main as merge_main

        return merge_main(args[1:])
    if args[:1] == ["--run-hardware"]:  # the hardware check of the welcome panel and About box
        from app.training.hardware_probe import main as hardware_main

        return hardware_main(args[1:])
    from app.cli import is_cli_invocation

    if is_cli_invocation(args):
        from app.cli import main as cli_main

        return cli_main(args)
    options = _gui_arguments(args)
    # The one place the core hands over to the window (see the contracts in pyproject.toml).
    from ui.application import run_gui

    return run_gui(home=options.home, smoke=options.smoke)


if __name__ == "__main__":
    sys.exit(main())
