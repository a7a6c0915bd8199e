"""Publishing a completed job to Ollama in one go (OLLAMA_API.md §4.3, "Recommended app flow").

1. Check the server (0.5.5 or newer) and choose the base: the one the user named, or the best
   suggestion for the job's base model that the server has (app.ollama.bases); refuse a base
   whose architecture or dimensions do not match the fine-tune.
2. The adapter route, for llama and gemma2 bases: upload adapter_model.safetensors and an
   adapter_config.json with an integer lora_alpha, and create from the base with the adapter.
   The merged route, for other architectures, full fine-tunes, or a server that refuses the
   adapter: merge the adapter into the base (a subprocess, when merged/ is not there yet) and
   import the weights through `files`, quantised as the user asked.
3. Always write the template, the stop tokens and the default system prompt derived from the
   tokenizer's chat template (app.ollama.template), so that the model stops where it should.
4. Verify with /api/show and a short generation; record which job became which model.

Status lines go to `on_status` as they come. A failure says what went wrong in one sentence;
a model that was created but fails its verification is deleted again, so nothing half-made is
left behind under the user's name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from app.db.models import Job, Publication
from app.db.session import Database
from app.errors import BadInputError, ConflictError, KnownError
from app.jobs.lifecycle import JobStatus
from app.jobs.service import get_job, job_dir
from app.ollama.bases import (
    ADAPTER_ARCHITECTURES,
    BaseShape,
    adapter_config_for_ollama,
    check_base,
    suggest_bases,
)
from app.ollama.client import OllamaClient
from app.ollama.errors import OllamaError, OllamaNotFound
from app.ollama.template import OllamaTemplate, derive_template
from app.ollama.types import CreateRequest, ModelInfo, same_model
from app.ollama.versions import adapter_create_may_be_missing
from app.paths import DataHome, self_command

log = logging.getLogger(__name__)

Route = Literal["adapter", "merged"]
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
BASE_CONFIG_FILE = "base_config.json"  # written by the trainer beside the adapter
# What Ollama's safetensors importer reads from a model folder (§4.3, "Fallback").
MERGED_PATTERNS = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "model*.safetensors",
)
QUANTISATIONS = ("q4_K_M", "q4_K_S", "q8_0", "f16")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*){0,2}(?::[\w.-]+)?$")
# Ollama's words when it cannot turn the adapter into a model: the merged route still can.
_ADAPTER_REFUSALS = (
    "unsupported architecture",
    "not supported",
    "not yet implemented",  # "loras are not yet implemented" (Ollama's own engine, v0.6-v0.24)
)
VERIFY_PROMPT = "Hello"

StatusCallback = Callable[[str], None]
MergeCommand = Callable[[Path], list[str]]


def merge_command(folder: Path) -> list[str]:
    return self_command("--run-merge", "--job-dir", str(folder))


@dataclass(frozen=True)
class PublishRequest:
    job_id: str
    name: str  # the new model's name in Ollama
    base: str | None = None  # the Ollama base; None picks the best suggestion the server has
    quantize: str | None = None  # for the merged route
    route: Literal["auto", "adapter", "merged"] = "auto"
    replace: bool = False  # overwrite a model of that name


@dataclass(frozen=True)
class PublishResult:
    name: str
    base: str | None
    route: Route
    reply: str  # the verification generation's answer
    publication_id: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BaseChoice:
    """An Ollama model offered as the base of a job, and whether it fits."""

    name: str
    installed: bool
    suggested: bool
    problems: tuple[str, ...] = ()
    adapter_supported: bool = False

    @property
    def fits(self) -> bool:
        return not self.problems


@dataclass
class _Job:
    """What publishing needs of the job, read once (off the event loop)."""

    id: str
    base_model: str
    method: str
    folder: Path
    shape: BaseShape | None
    artifacts: dict[str, Any] = field(default_factory=dict)

    @property
    def adapter_dir(self) -> Path:
        return self.folder / "adapter"

    @property
    def merged_dir(self) -> Path:
        return self.folder / "merged"

    @property
    def has_adapter(self) -> bool:
        return all((self.adapter_dir / name).is_file() for name in ADAPTER_FILES)

    @property
    def has_merged(self) -> bool:
        return (self.merged_dir / "config.json").is_file()


def check_model_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise BadInputError(
            f"'{name}' is not a usable Ollama model name; use letters, digits, '.', '-' and '_', "
            "with an optional ':tag' (for example my-model:v1)."
        )
    return name


class Publisher:
    """Publishes jobs of one data folder to one Ollama server."""

    def __init__(
        self,
        client: OllamaClient,
        database: Database,
        home: DataHome,
        *,
        on_status: StatusCallback | None = None,
        merge: MergeCommand = merge_command,
    ) -> None:
        self._client = client
        self._database = database
        self._home = home
        self._on_status = on_status or (lambda _text: None)
        self._merge_command = merge

    # --- choosing the base ---------------------------------------------------------------

    async def base_choices(self, job_id: str) -> list[BaseChoice]:
        """The suggested bases (installed or not) and the installed models, each checked
        against the job's base when Ollama has it; suggestions first."""
        job = await asyncio.to_thread(self._read_job, job_id)
        suggested = suggest_bases(job.base_model, job.shape)
        installed = [model.name for model in await self._client.tags()]
        names = [*suggested, *[n for n in installed if n not in suggested]]

        async def check(name: str) -> BaseChoice:
            present = _present(name, installed)
            if not present or job.shape is None:
                return BaseChoice(name, present, name in suggested)
            try:
                info = await self._client.show(name)
            except OllamaError as error:
                return BaseChoice(name, present, name in suggested, (error.message,))
            fit = check_base(job.shape, info.model_info, info.architecture, name=name)
            return BaseChoice(name, present, name in suggested, fit.problems, fit.adapter_supported)

        return list(await asyncio.gather(*(check(name) for name in names)))

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, request: PublishRequest) -> PublishResult:
        name = check_model_name(request.name)
        version = await self._client.check()
        self._status(f"Ollama {version} at {self._client.base_url}.")
        if adapter_create_may_be_missing(version):
            # Reported, not verified (OLLAMA_API.md §0.6): the create is tried all the same,
            # and a refusal falls back to the merged weights.
            self._status(f"Ollama {version} may no longer create models from LoRA adapters.")
        job = await asyncio.to_thread(self._read_job, request.job_id)
        await self._refuse_existing(name, request.replace)
        base, info = await self._choose_base(job, request.base)
        template = await self._template(job, info)
        notes = list(template.notes)
        route = await self._route(job, request.route, info, notes)
        # The model is made and checked under a staging name, then copied to the user's name:
        # a failure or a cancel at any point leaves no half-made model, and a model it replaces
        # stays as it was until the new one has passed its check.
        staging = f"{name.split(':', 1)[0]}-publishing-{secrets.token_hex(3)}"
        try:
            route = await self._create(
                job,
                staging,
                base=base,
                template=template,
                route=route,
                request=request,
                notes=notes,
            )
            reply = await self._verify(staging, route)
            await self._client.copy(staging, name)
        finally:
            await self._delete_quietly(staging)
        publication_id = await asyncio.to_thread(
            self._record, job.id, name, base, route, request.quantize
        )
        self._status(f"Published {name}.")
        return PublishResult(name, base, route, reply, publication_id, tuple(notes))

    async def _create(
        self,
        job: _Job,
        name: str,
        *,
        base: str | None,
        template: OllamaTemplate,
        route: Route,
        request: PublishRequest,
        notes: list[str],
    ) -> Route:
        """Create the model by `route`; an adapter Ollama refuses falls back to merged weights
        (unless the user asked for the adapter). Returns the route taken."""
        if route == "adapter":
            try:
                await self._create_with_adapter(job, name, base, template)
                return "adapter"
            except OllamaError as error:
                if request.route == "adapter" or not _refuses_adapters(error):
                    raise
                self._note(
                    notes,
                    f"Ollama could not take the adapter ({error.server_message}); "
                    "publishing the merged model instead.",
                )
        await self._create_merged(job, name, template, request.quantize)
        return "merged"

    async def _template(self, job: _Job, base: ModelInfo | None) -> OllamaTemplate:
        """The template derived from the job's tokenizer; where that cannot be done, the
        base's own template and stops, said in a note (the job was trained on that base)."""
        try:
            return await asyncio.to_thread(derive_template, self._template_folder(job))
        except BadInputError as error:
            if base is None or not base.template:
                raise
            stops = tuple(base.parameter_values().get("stop", []))
            note = f"{error.message} The base model's own template is used instead."
            self._status(note)
            return OllamaTemplate(base.template, stops, None, (note,))

    def _note(self, notes: list[str], text: str) -> None:
        self._status(text)
        notes.append(text)

    def _status(self, text: str) -> None:
        log.info("publish: %s", text)
        self._on_status(text)

    async def _refuse_existing(self, name: str, replace: bool) -> None:
        if replace:
            return
        installed = [model.name for model in await self._client.tags()]
        if _present(name, installed):
            raise ConflictError(
                f"Ollama already has a model named {name}; choose another name or replace it."
            )

    async def _choose_base(
        self, job: _Job, wanted: str | None
    ) -> tuple[str | None, ModelInfo | None]:
        """The Ollama base and its details; (None, None) for a full fine-tune, which needs none."""
        if job.method == "full" and wanted is None:
            return None, None
        if wanted is None:
            installed = [model.name for model in await self._client.tags()]
            suggestions = suggest_bases(job.base_model, job.shape)
            wanted = next((s for s in suggestions if _present(s, installed)), None)
            if wanted is None:
                if not job.has_merged and not job.has_adapter:
                    raise BadInputError(f"Job {job.id} has no adapter or merged model to publish.")
                hint = f" (for example: ollama pull {suggestions[0]})" if suggestions else ""
                self._status(
                    "Ollama has no matching base model installed"
                    f"{hint}; publishing the merged model instead."
                )
                return None, None
        try:
            info = await self._client.show(wanted)
        except OllamaNotFound as error:
            raise BadInputError(
                f"Ollama has no model {wanted}; pull it first (ollama pull {wanted}) or choose "
                "another base."
            ) from error
        if job.shape is not None:
            fit = check_base(job.shape, info.model_info, info.architecture, name=wanted)
            if not fit.ok:
                raise BadInputError(" ".join(fit.problems))
        self._status(f"Base model: {wanted} ({info.architecture}).")
        return wanted, info

    async def _route(
        self, job: _Job, wanted: str, info: ModelInfo | None, notes: list[str]
    ) -> Route:
        adapter_fits = (
            info is not None
            and job.has_adapter
            and job.method != "full"
            and info.architecture in ADAPTER_ARCHITECTURES
        )
        if wanted == "adapter" and not adapter_fits:
            raise BadInputError(
                "Ollama takes a LoRA adapter only on a llama or gemma2 base; publish the "
                "merged model instead."
            )
        if wanted == "merged" or not adapter_fits:
            return "merged"
        try:
            await asyncio.to_thread(self._adapter_config_for_ollama, job)
        except BadInputError as error:  # an adapter Ollama cannot represent (DoRA, …)
            if wanted == "adapter":
                raise
            self._note(notes, f"{error.message} Publishing the merged model instead.")
            return "merged"
        return "adapter"

    async def _create_with_adapter(
        self, job: _Job, name: str, base: str | None, template: OllamaTemplate
    ) -> None:
        config_path = await asyncio.to_thread(self._adapter_config_for_ollama, job)
        self._status("Uploading the adapter…")
        files = {
            "adapter_model.safetensors": job.adapter_dir / "adapter_model.safetensors",
            "adapter_config.json": config_path,
        }
        digests = await self._client.push_blobs(files, on_progress=self._upload_progress())
        request = CreateRequest(
            model=name, from_=base, adapters=digests, **_template_fields(template)
        )
        await self._send_create(request)

    async def _create_merged(
        self, job: _Job, name: str, template: OllamaTemplate, quantize: str | None
    ) -> None:
        if not job.has_merged:
            await self._merge(job)
        files = await asyncio.to_thread(_merged_files, job.merged_dir)
        self._status(f"Uploading the merged model ({len(files)} files)…")
        digests = await self._client.push_blobs(files, on_progress=self._upload_progress())
        request = CreateRequest(
            model=name, files=digests, quantize=quantize, **_template_fields(template)
        )
        await self._send_create(request)

    def _upload_progress(self) -> Callable[[int, int], None]:
        """A status line at every tenth of the upload (a merged model can be gigabytes)."""
        reported = [-1]

        def progress(sent: int, total: int) -> None:
            tenth = sent * 10 // total if total else 10
            if tenth != reported[0]:
                reported[0] = tenth
                self._status(f"Uploaded {sent / 1e6:,.1f} of {total / 1e6:,.1f} MB")

        return progress

    async def _send_create(self, request: CreateRequest) -> None:
        async with aclosing(self._client.create(request)) as lines:
            async for line in lines:
                self._status(line.status)

    async def _merge(self, job: _Job) -> None:
        if not job.has_adapter:
            raise BadInputError(f"Job {job.id} has neither an adapter nor merged weights.")
        self._status("Merging the adapter into the base model (this loads the whole model)…")
        log_path = job.folder / "merge.log"
        code = await _run_stoppably(self._merge_command(job.folder), log_path)
        if code != 0 or not job.has_merged:
            lines = log_path.read_text(errors="replace").strip().splitlines()
            last = lines[-1] if lines else f"exit code {code}"
            raise KnownError(f"Merging the adapter into its base failed: {last}")

    async def _verify(self, name: str, route: Route) -> str:
        """The model is there, has its adapter, and answers."""
        info = await self._client.show(name)
        if route == "adapter" and not info.has_adapter:
            raise KnownError("Ollama created the model without its adapter; publish it again.")
        self._status("Checking that the model answers…")
        options = {"num_predict": 16, "temperature": 0, "seed": 0}
        reply, _final = await self._client.generate_text(name, VERIFY_PROMPT, options=options)
        return reply

    async def _delete_quietly(self, name: str) -> None:
        """Remove the staging model, if it was made; also when the publish was cancelled."""
        try:
            await asyncio.shield(self._client.delete(name))
        except OllamaNotFound:
            pass
        except (OllamaError, asyncio.CancelledError):
            log.warning("could not remove a staging model", extra={"model": name})

    # --- files and the database (run in a thread) -----------------------------------------

    def _read_job(self, job_id: str) -> _Job:
        job: Job = get_job(self._database, job_id)
        if job.status != JobStatus.COMPLETED:
            raise ConflictError(
                f"Job {job.id} is {job.status}; only a completed job can be published."
            )
        folder = job_dir(self._home, job.id)
        return _Job(job.id, job.base_model, job.method, folder, _shape(folder), job.artifacts)

    def _template_folder(self, job: _Job) -> Path:
        return job.adapter_dir if job.has_adapter else job.merged_dir

    def _adapter_config_for_ollama(self, job: _Job) -> Path:
        config = orjson.loads((job.adapter_dir / "adapter_config.json").read_bytes())
        fixed = adapter_config_for_ollama(config)
        target = job.folder / "publish" / "adapter_config.json"
        target.parent.mkdir(exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(orjson.dumps(fixed, option=orjson.OPT_INDENT_2))
        partial.replace(target)
        return target

    def _record(
        self, job_id: str, name: str, base: str | None, route: Route, quantize: str | None
    ) -> int:
        publication = Publication(
            job_id=job_id,
            ollama_model=name,
            ollama_url=self._client.base_url,
            ollama_base=base,
            route=route,
            quantize=quantize if route == "merged" else None,
        )
        with self._database.session() as session:
            session.add(publication)
            session.flush()
            return publication.id


def publications(database: Database, job_id: str) -> list[Publication]:
    """Where a job was published, newest first."""
    from sqlalchemy import select

    query = (
        select(Publication)
        .where(Publication.job_id == job_id)
        .order_by(Publication.created_at.desc(), Publication.id.desc())
    )
    with database.session() as session:
        return list(session.scalars(query))


def _shape(folder: Path) -> BaseShape | None:
    """The base's shape from the trainer's copy of its config (or the merged model's)."""
    for candidate in (folder / "adapter" / BASE_CONFIG_FILE, folder / "merged" / "config.json"):
        if candidate.is_file():
            return BaseShape.from_config(orjson.loads(candidate.read_bytes()))
    return None


def _present(name: str, installed: list[str]) -> bool:
    return any(same_model(name, other) for other in installed)


def _template_fields(template: OllamaTemplate) -> dict[str, Any]:
    fields: dict[str, Any] = {"template": template.template}
    if template.stop:
        fields["parameters"] = {"stop": list(template.stop)}
    if template.system:
        fields["system"] = template.system
    return fields


def _merged_files(folder: Path) -> Mapping[str, Path]:
    files: dict[str, Path] = {}
    for pattern in MERGED_PATTERNS:
        for path in sorted(folder.glob(pattern)):
            files[path.name] = path
    if not any(name.endswith(".safetensors") for name in files):
        raise BadInputError(f"{folder} holds no safetensors weights; merge the job again.")
    return files


def _refuses_adapters(error: OllamaError) -> bool:
    text = error.server_message.casefold()
    return any(word in text for word in _ADAPTER_REFUSALS)


MERGE_GRACE_S = 10.0


async def _run_stoppably(command: list[str], log_path: Path) -> int:
    """Run `command` to its end without blocking the loop; cancelled, it gets SIGTERM, a grace
    period, then its process group is killed (it may be loading a whole model)."""
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=sys.platform != "win32",
        )
    try:
        while (code := process.poll()) is None:
            await asyncio.sleep(0.2)
        return code
    except asyncio.CancelledError:
        await asyncio.shield(asyncio.to_thread(_stop, process))
        raise


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(MERGE_GRACE_S)
    except subprocess.TimeoutExpired:
        if sys.platform == "win32":
            process.kill()
        else:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
