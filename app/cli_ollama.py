"""The `mtm ollama ...` commands: status, list, publish and evaluate, against the configured
Ollama (or `--url`). Progress goes to stderr, so that `--json` output on stdout stays clean."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from app.cli_output import answer

T = TypeVar("T")


def add_ollama_commands(groups: Any, common: argparse.ArgumentParser) -> None:
    ollama = groups.add_parser("ollama", help="talk to Ollama: status, models, publish, evaluate")
    commands = ollama.add_subparsers(dest="command", required=True, metavar="ACTION")
    server = argparse.ArgumentParser(add_help=False, parents=[common])
    server.add_argument("--url", help="Ollama's address (default: the ollama_url setting)")
    server.add_argument("--json", action="store_true")
    status = commands.add_parser("status", parents=[server], help="is Ollama running, which one")
    status.set_defaults(handler=_status)
    listing = commands.add_parser("list", parents=[server], help="the models Ollama has")
    listing.set_defaults(handler=_list)
    publish = commands.add_parser(
        "publish", parents=[server], help="publish a completed job to Ollama as a new model"
    )
    publish.add_argument("job_id")
    publish.add_argument("--name", required=True, help="the new model's name, e.g. my-model:v1")
    publish.add_argument("--base", help="the Ollama base model (default: the best match)")
    publish.add_argument(
        "--quantize",
        choices=["q4_K_M", "q4_K_S", "q8_0", "f16"],  # app.ollama.publish.QUANTISATIONS
        help="for merged weights: the quantisation Ollama stores them in",
    )
    publish.add_argument("--route", choices=["auto", "adapter", "merged"], default="auto")
    publish.add_argument("--replace", action="store_true", help="overwrite a model of that name")
    publish.set_defaults(handler=_publish)
    evaluate = commands.add_parser(
        "evaluate",
        parents=[server],
        help="run validation examples through a published job and its base, side by side",
    )
    evaluate.add_argument("job_id")
    evaluate.add_argument("--model", help="the published model (default: the latest publication)")
    evaluate.add_argument("--base", help="the Ollama base to compare with (default: its base)")
    evaluate.add_argument("--examples", type=int, default=20, help="how many (default 20)")
    evaluate.add_argument("--num-ctx", type=int, default=None, help="the context to ask for")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(handler=_evaluate)


def _url(args: argparse.Namespace) -> str:
    url: str = args.url or args.context.settings.load().ollama_url
    return url


def _run(args: argparse.Namespace, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(client)` against the chosen server, closing the client afterwards."""
    from app.ollama.client import OllamaClient

    async def main() -> T:
        async with OllamaClient(_url(args)) as client:
            return await work(client)

    return asyncio.run(main())


def _status(args: argparse.Namespace) -> int:
    from app.ollama.errors import OllamaError
    from app.ollama.versions import upgrade_advice

    url = _url(args)
    try:
        version = _run(args, lambda client: client.check())
    except OllamaError as error:
        if args.json:
            print(json.dumps({"url": url, "running": False, "error": error.message}))
        else:
            print(error.message, file=sys.stderr)
        return 1
    advice = upgrade_advice(version, url)
    status = {"url": url, "running": True, "version": version, "advice": advice}
    text = f"Ollama {version} is running at {url}." + (f" {advice}" if advice else "")
    return answer(args, status, text)


def _list(args: argparse.Namespace) -> int:
    models = _run(args, lambda client: client.tags())
    if args.json:
        return answer(args, [model.model_dump(mode="json") for model in models])
    if not models:
        print("Ollama has no models yet; pull one with: ollama pull smollm2:135m")
    for model in models:
        details = model.details
        size = f"{model.size / 1e9:.2f} GB"
        quantisation = details.quantization_level
        print(f"{model.name:<40} {details.parameter_size:>8} {quantisation:>8} {size}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from app.ollama.publish import Publisher, PublishRequest

    context = args.context
    request = PublishRequest(
        job_id=args.job_id,
        name=args.name,
        base=args.base,
        quantize=args.quantize,
        route=args.route,
        replace=args.replace,
    )

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    async def work(client: Any) -> Any:
        publisher = Publisher(client, context.database, context.home, on_status=say)
        return await publisher.publish(request)

    result = _run(args, work)
    summary = {
        "job_id": args.job_id,
        "model": result.name,
        "base": result.base,
        "route": result.route,
        "url": _url(args),
        "reply": result.reply,
        "notes": list(result.notes),
    }
    how = f"with its adapter on {result.base}" if result.route == "adapter" else "merged"
    published = f"Published job {args.job_id} as {result.name} ({how})."
    return answer(args, summary, published, f"Try it: ollama run {result.name}")


def _evaluate(args: argparse.Namespace) -> int:
    from app.errors import BadInputError
    from app.ollama.evaluate import evaluate
    from app.ollama.publish import publications

    context = args.context
    published = publications(context.database, args.job_id)
    tuned = args.model or (published[0].ollama_model if published else None)
    base = args.base or (published[0].ollama_base if published else None)
    if tuned is None:
        raise BadInputError(
            f"Job {args.job_id} has not been published; publish it first "
            f"(mtm ollama publish {args.job_id} --name NAME) or pass --model."
        )
    if base is None:
        raise BadInputError(f"Say which Ollama model to compare {tuned} with: pass --base.")

    def progress(done: int, total: int) -> None:
        print(f"{done}/{total} examples", file=sys.stderr, flush=True)

    async def work(client: Any) -> Any:
        return await evaluate(
            client,
            context.database,
            context.home,
            args.job_id,
            tuned_model=tuned,
            base_model=base,
            examples=args.examples,
            num_ctx=args.num_ctx,
            seed=args.seed,
            on_progress=progress,
        )

    report = _run(args, work)
    if args.json:
        return answer(args, {"tuned_model": tuned, "base_model": base, **report.scores})
    scores = report.scores
    print(f"{scores['examples']} validation examples, {tuned} against {base}:")
    rows = (
        ("exact match", "exact_match_base", "exact_match_tuned"),
        ("token F1", "token_f1_base", "token_f1_tuned"),
        ("tokens/s", "tokens_per_second_base", "tokens_per_second_tuned"),
    )
    for label, base_key, tuned_key in rows:
        print(f"  {label:<12} base {_number(scores[base_key])}  tuned {_number(scores[tuned_key])}")
    return 0


def _number(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
