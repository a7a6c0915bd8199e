"""The `mtm jobs ...` and `mtm worker run` commands."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli_output import answer
from app.errors import BadInputError

# Flag -> hyperparameter, for `mtm jobs create`.
_HYPERPARAMETER_FLAGS = {
    "epochs": int,
    "batch_size": int,
    "learning_rate": float,
    "max_seq_length": int,
    "lora_r": int,
    "lora_alpha": int,
    "lora_dropout": float,
    "eval_fraction": float,
    "save_steps": int,
    "seed": int,
    "max_steps": int,
}


def add_job_commands(groups: Any, common: argparse.ArgumentParser) -> None:
    jobs = groups.add_parser("jobs", help="create, list and control training jobs")
    commands = jobs.add_subparsers(dest="command", required=True, metavar="ACTION")
    create = commands.add_parser("create", parents=[common], help="queue a training job")
    create.add_argument("--dataset", required=True, help="dataset id or name")
    create.add_argument("--base-model", required=True, help="Hugging Face id, folder or .gguf")
    create.add_argument("--method", choices=["lora", "qlora", "full"], default=None)
    for flag, kind in _HYPERPARAMETER_FLAGS.items():
        create.add_argument(f"--{flag.replace('_', '-')}", type=kind, default=None)
    create.add_argument("--merge", action="store_true", help="also write merged weights")
    create.add_argument("--target", metavar="NAME", help="run on this cluster (mtm clusters)")
    create.add_argument("--name")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=_jobs_create)
    listing = commands.add_parser("list", parents=[common], help="list jobs")
    listing.add_argument("--status", action="append", help="only jobs in this status")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_jobs_list)
    for action, text, handler in (
        ("show", "show one job", _jobs_show),
        ("cancel", "cancel a queued or running job", _jobs_cancel),
        ("resume", "resume a cancelled or interrupted job from its checkpoint", _jobs_resume),
        ("retry", "start a failed job over", _jobs_retry),
        ("delete", "delete a job and its files", _jobs_delete),
    ):
        command = commands.add_parser(action, parents=[common], help=text)
        command.add_argument("id")
        command.add_argument("--json", action="store_true")
        command.set_defaults(handler=handler)
    move = commands.add_parser("move", parents=[common], help="change a queued job's place")
    move.add_argument("id")
    where = move.add_mutually_exclusive_group(required=True)
    for direction, text in (
        ("up", "one place up"),
        ("down", "one place down"),
        ("front", "to the front: it starts next"),
        ("back", "to the back"),
    ):
        where.add_argument(
            f"--{direction}", dest="move", action="store_const", const=direction, help=text
        )
    move.add_argument("--json", action="store_true")
    move.set_defaults(handler=_jobs_move)
    worker = groups.add_parser("worker", help="run the job queue headless")
    worker_commands = worker.add_subparsers(dest="command", required=True, metavar="ACTION")
    run = worker_commands.add_parser("run", parents=[common], help="run queued jobs")
    run.add_argument("--max-workers", type=int, default=None)
    run.add_argument("--until-idle", action="store_true", help="exit when the queue is empty")
    run.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="N",
        help="serve Prometheus metrics on 127.0.0.1:N",
    )
    run.set_defaults(handler=_worker_run)
    for action, text, handler in (
        ("pause", "start no new jobs (running ones go on)", _worker_pause),
        ("resume", "start queued jobs again", _worker_resume),
        ("status", "show the running pools and what each slot does", _worker_status),
    ):
        command = worker_commands.add_parser(action, parents=[common], help=text)
        command.add_argument("--json", action="store_true")
        command.set_defaults(handler=handler)


def _jobs_create(args: argparse.Namespace) -> int:
    from app.jobs.service import NewJob, create_job

    overrides = {
        name: getattr(args, name)
        for name in _HYPERPARAMETER_FLAGS
        if getattr(args, name) is not None
    }
    if args.method:
        overrides["method"] = args.method
    context = args.context
    if args.target is not None:
        from app.executors.clusters import ClusterStore

        ClusterStore(context.database).get(args.target)  # one sentence if there is none
    new = NewJob(
        args.dataset, args.base_model, args.name, overrides, merge=args.merge, target=args.target
    )
    job = create_job(context.database, context.home, context.settings.load(), new)
    return _print_job(args, job, f"Queued job {job.id} ({job.name}).")


def _jobs_list(args: argparse.Namespace) -> int:
    from app.jobs.service import interrupt_orphans, list_jobs, queue_places

    interrupt_orphans(args.context.database)  # whichever window or command looks first
    jobs = list_jobs(args.context.database, args.status)
    if args.json:
        places = queue_places(args.context.database)
        return answer(args, [job_summary(j, args.context, places) for j in jobs])
    if not jobs:
        print("No jobs yet; queue one with: mtm jobs create --dataset ID --base-model MODEL")
    for job in jobs:
        print(f"{job.id:<13} {job.status:<12} {job.step:>6}/{job.total_steps:<6} {job.name}")
    return 0


def _jobs_show(args: argparse.Namespace) -> int:
    from app.jobs.service import get_job, interrupt_orphans

    interrupt_orphans(args.context.database)
    job = get_job(args.context.database, args.id)
    return _print_job(args, job, None)


def _jobs_cancel(args: argparse.Namespace) -> int:
    from app.executors.remote_jobs import cancel_where_it_runs
    from app.jobs.service import target_of

    job = cancel_where_it_runs(args.context.database, args.id)
    target = target_of(job.spec)
    if job.status == "cancelled":
        text = "Cancelled."
    elif target is not None:
        text = f"Asked the cluster {target} to stop it; it saves a checkpoint first."
    else:
        text = "Asked the trainer to stop."
    return _print_job(args, job, f"{text} ({job.id})")


def _jobs_resume(args: argparse.Namespace) -> int:
    from app.jobs.service import resume_job

    job = resume_job(args.context.database, args.context.home, args.id)
    return _print_job(args, job, f"Queued {job.id} again; it resumes from its last checkpoint.")


def _jobs_retry(args: argparse.Namespace) -> int:
    from app.jobs.service import retry_job

    job = retry_job(args.context.database, args.context.home, args.id)
    return _print_job(args, job, f"Queued {job.id} again from the start (attempt {job.attempt}).")


def _jobs_move(args: argparse.Namespace) -> int:
    from app.jobs.service import QueueMove, move_job, queue_places

    job = move_job(args.context.database, args.context.home, args.id, QueueMove(args.move))
    place = queue_places(args.context.database).get(job.id)
    return _print_job(args, job, f"Job {job.id} is now number {place} in the queue.")


def _jobs_delete(args: argparse.Namespace) -> int:
    from app.jobs.service import delete_job, get_job

    job = get_job(args.context.database, args.id)
    summary = job_summary(job, args.context)
    delete_job(args.context.database, args.context.home, job.id)
    return answer(args, {**summary, "deleted": True}, f"Deleted job {job.id} and its files.")


def _print_job(args: argparse.Namespace, job: Any, text: str | None) -> int:
    summary = job_summary(job, args.context)
    lines = [text] if text else [f"{key:>18}: {value}" for key, value in summary.items()]
    return answer(args, summary, *lines)


def job_summary(job: Any, context: Any, places: dict[str, int] | None = None) -> dict[str, Any]:
    """The JSON shape of a job in `mtm jobs ... --json`; `places` are the queue's (1 = next)."""
    from app.jobs.service import job_dir, queue_places

    if places is None:
        places = queue_places(context.database) if job.status == "queued" else {}

    def iso(value: Any) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "dataset_id": job.dataset_id,
        "dataset_name": job.dataset_name,
        "base_model": job.base_model,
        "method": job.method,
        "attempt": job.attempt,
        "step": job.step,
        "total_steps": job.total_steps,
        "loss": job.loss,
        "eval_loss": job.eval_loss,
        "tokens_per_second": job.tokens_per_second,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "error": job.error,
        "queue_place": places.get(job.id),
        "artifacts": job.artifacts,
        "job_dir": str(job_dir(context.home, job.id)),
    }


def _worker_run(args: argparse.Namespace) -> int:
    from app.workers.headless import run_pool

    context = args.context
    workers = args.max_workers or context.settings.load().max_concurrent_jobs
    if workers < 1:
        raise BadInputError("--max-workers must be 1 or more.")
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise BadInputError("--metrics-port must be a port number from 1 to 65535.")
    return run_pool(
        context.database,
        context.home,
        workers,
        until_idle=args.until_idle,
        metrics_port=args.metrics_port,
    )


def _worker_pause(args: argparse.Namespace) -> int:
    from app.workers.control import set_paused

    set_paused(args.context.home, True)
    print("Paused: no new job starts; running jobs go on.")
    return 0


def _worker_resume(args: argparse.Namespace) -> int:
    from app.jobs.service import signal_queue
    from app.workers.control import set_paused

    set_paused(args.context.home, False)
    signal_queue(args.context.home)
    print("Resumed: queued jobs start as workers free up.")
    return 0


def _worker_status(args: argparse.Namespace) -> int:
    from app.jobs.service import get_job
    from app.workers.control import is_paused, read_states

    home, database = args.context.home, args.context.database
    pools: list[dict[str, Any]] = []
    for state in read_states(home):
        slots = []
        for slot in state.slots:
            job = get_job(database, slot["job_id"]) if slot["job_id"] else None
            slots.append(
                {
                    "slot": slot["slot"],
                    "job_id": slot["job_id"],
                    "step": job.step if job else None,
                    "total_steps": job.total_steps if job else None,
                }
            )
        pools.append(
            {"pid": state.pid, "name": state.name, "max_workers": state.max_workers, "slots": slots}
        )
    report: dict[str, Any] = {"paused": is_paused(home), "pools": pools}
    if args.json:
        return answer(args, report)
    print(f"Queue {'paused' if report['paused'] else 'running'}; {len(pools)} pool(s).")
    for pool in pools:
        print(f"pool {pool['name']} ({pool['max_workers']} workers)")
        for slot in pool["slots"]:
            doing = (
                f"job {slot['job_id']} at step {slot['step']}/{slot['total_steps']}"
                if slot["job_id"]
                else "idle"
            )
            print(f"  worker {slot['slot']}: {doing}")
    return 0
