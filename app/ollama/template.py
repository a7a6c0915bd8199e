"""A fine-tune's Ollama template and stop sequences, derived from its tokenizer's chat template.

Ollama renders prompts with a Go template (text/template) over `.Messages`; Hugging Face models
carry a Jinja chat template. Rather than recognising known model families, this module renders the
Jinja template (as transformers does) over sentinel conversations, splits the output around the
sentinels to learn each role's prefix and suffix, the generation prompt, any default system prompt
and where the BOS goes, and writes a Go template that reproduces the same text for any conversation.
Before it returns, it checks its own rendering against the Jinja template on ordinary conversations,
and refuses (BadInputError) what it cannot reproduce.

Choices, where Ollama and Jinja differ:

* **System prompts.** Ollama's chat puts the model's SYSTEM in front of the request's messages
  unless the first one is a system message, and passes every message, system ones included, in
  `.Messages` (`.System` repeats the system text). The Go template therefore renders system
  messages where they stand in `.Messages` and never reads `.System`. A default system prompt that
  the Jinja template writes when none is given (SmolLM2, Qwen2.5) becomes `OllamaTemplate.system`,
  to be published as the model's SYSTEM; a default block without text (Llama 3.1's header with its
  knowledge date) is written by the Go template itself when the first message is not a system one.
* **Templates without a system role.** Gemma 2 and Mistral v0.1 raise "System role not supported":
  the Go template leaves system messages out, and `notes` says so. Templates that fold the system
  prompt into the first user turn (Gemma 3, Llama 2) or into the last one (Mistral v0.3) are
  reproduced. System messages after the first turn are rendered as the template renders them when
  it can, else like the first one, or left out (with a note) when the template refuses them.
* **BOS.** Ollama's runner adds the BOS token itself when it tokenizes the prompt (the templates
  in Ollama's library never write one), so a BOS that the Jinja template writes at the very start
  is left out of the Go template; BOS tokens later in the text (Llama 2's per-turn `<s>`) are kept.
  The equivalence the tests check is: Go output == Jinja output without that leading BOS.
* **A final assistant message** is left open (no end-of-turn, no generation prompt), so that Ollama
  continues it, as Ollama's own templates do; the text then matches transformers'
  `continue_final_message`.
* **Dates.** A template that writes today's date (Llama 3.2 via `strftime_now`) gets the date of
  the derivation fixed into the Go template (Ollama's Go templates have no date formatting), with
  a note.
* Jinja filters applied to message text (`| trim`) have no Go equivalent: text is passed unchanged,
  which is the same for text without leading or trailing white space. Tool calls, images and
  thinking are not rendered; messages with other roles (tool) are left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from app.errors import BadInputError

# Keys of a tokenizer's special tokens that transformers passes to the chat template.
_SPECIAL_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
GENERATION_EOS_KEY = "generation_eos_tokens"  # in `special`: tokens generation_config stops at

Message = tuple[str, str]  # (role, content)


@dataclass(frozen=True)
class OllamaTemplate:
    """What to publish with the model: its TEMPLATE, the "stop" parameter and its SYSTEM."""

    template: str  # the Go template
    stop: tuple[str, ...]  # stop sequences for the parameters' "stop"
    system: str | None  # the default system prompt the Jinja template injects, else None
    notes: tuple[str, ...] = ()  # one sentence each: what the Ollama template does differently


# ---------------------------------------------------------------------------------------------
# reading the tokenizer files


def read_chat_template(folder: Path) -> tuple[str, dict[str, Any]]:
    """The Jinja chat template in a model folder and the tokenizer's special tokens.

    The template comes from `chat_template.jinja` (what newer transformers write) or else from
    `tokenizer_config.json`'s `chat_template` (a string, or a list of named templates: "default"
    is taken). The special tokens are strings under their usual keys (bos_token, eos_token, ...),
    plus `GENERATION_EOS_KEY`: the tokens named by generation_config.json's `eos_token_id`.
    """
    if not folder.is_dir():
        raise BadInputError(f"The model folder {folder} does not exist; train the model again.")
    config = _read_json(folder / "tokenizer_config.json")
    source: Any = None
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        try:
            source = jinja_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise BadInputError(f"{jinja_file} cannot be read ({error}); check the file.") from None
    if not source:
        source = config.get("chat_template")
        if not source:
            source = _read_json(folder / "chat_template.json").get("chat_template")
    if isinstance(source, list):
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, Mapping)}
        source = named.get("default") or next(iter(named.values()), None)
    if not isinstance(source, str) or not source.strip():
        raise BadInputError(
            f"The model in {folder} has no chat template; add one to its tokenizer "
            "(chat_template.jinja) or train it again with this app, which always writes one."
        )
    special: dict[str, Any] = {}
    for origin in (config, _read_json(folder / "special_tokens_map.json")):
        for key in _SPECIAL_KEYS:
            text = _token_text(origin.get(key))
            if text and key not in special:
                special[key] = text
        extra = origin.get("additional_special_tokens")
        if isinstance(extra, list) and "additional_special_tokens" not in special:
            special["additional_special_tokens"] = [t for t in map(_token_text, extra) if t]
    special[GENERATION_EOS_KEY] = _generation_eos(folder, config)
    return source, special


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise BadInputError(f"{path} is not readable JSON ({error}); check the file.") from None
    return value if isinstance(value, dict) else {}


def _token_text(value: Any) -> str | None:
    """A token as text: tokenizer files write a plain string or an AddedToken object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _generation_eos(folder: Path, config: Mapping[str, Any]) -> list[str]:
    ids = _read_json(folder / "generation_config.json").get("eos_token_id")
    wanted = [ids] if isinstance(ids, int) else ids if isinstance(ids, list) else []
    wanted = [i for i in wanted if isinstance(i, int) and not isinstance(i, bool)]
    if not wanted:
        return []
    names: dict[int, str] = {}
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, Mapping):
        for key, token in decoder.items():
            text = _token_text(token)
            if text and str(key).isdigit():
                names[int(key)] = text
    tokenizer = _read_json(folder / "tokenizer.json") if set(wanted) - set(names) else {}
    for token in tokenizer.get("added_tokens") or []:
        if isinstance(token, Mapping) and isinstance(token.get("id"), int):
            text = _token_text(token)
            if text:
                names.setdefault(int(token["id"]), text)
    if set(wanted) - set(names):
        vocab = (tokenizer.get("model") or {}).get("vocab")
        if isinstance(vocab, Mapping):
            for text, i in vocab.items():
                if i in wanted:
                    names.setdefault(i, str(text))
    return [names[i] for i in wanted if i in names]


def derive_template(folder: Path) -> OllamaTemplate:
    """The Ollama template of the model in `folder` (an adapter or merged model folder)."""
    source, special = read_chat_template(folder)
    return derive_from_jinja(source, special)


# ---------------------------------------------------------------------------------------------
# rendering the Jinja template as transformers does


class _Refused(Exception):
    """The Jinja template raised for this conversation (e.g. "System role not supported")."""


def _compile(source: str) -> Callable[..., str]:
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """transformers' {% generation %} tag, which only marks the assistant's text."""

        tags = {"generation"}  # noqa: RUF012 - jinja's own declaration style

        def parse(self, parser: Any) -> jinja2.nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_body")
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _body(self, caller: Callable[[], str]) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    try:
        compiled = env.from_string(source)
    except jinja2.TemplateError as error:
        raise BadInputError(
            f"The chat template is not valid Jinja ({_clause(str(error))}); fix the model's "
            "chat template."
        ) from None

    def render(now: datetime, **context: Any) -> str:
        try:
            return compiled.render(strftime_now=now.strftime, **context)
        except (jinja2.TemplateError, TypeError, ValueError, LookupError, AttributeError) as error:
            raise _Refused(_clause(str(error))) from None

    return render


def _clause(text: str) -> str:
    """The first sentence of an error message, without its full stop, to go inside ours."""
    first = text.strip().splitlines()[0] if text.strip() else "no reason given"
    return first.split(". ")[0].rstrip(".")


class _Jinja:
    """Renders one chat template over conversations, with given special tokens and date."""

    def __init__(
        self,
        render: Callable[..., str],
        special: Mapping[str, Any],
        tokens: Mapping[str, str],
        now: datetime,
    ) -> None:
        self._render = render
        self.now = now
        context: dict[str, Any] = {}
        for key, value in special.items():
            if key in _SPECIAL_KEYS:
                text = _token_text(value)
                if text:
                    context[key] = text
            elif key == "additional_special_tokens" and isinstance(value, list):
                context[key] = [t for t in map(_token_text, value) if t]
        context.update(tokens)
        self.context = context

    def __call__(
        self, messages: Sequence[Message], generation: bool, now: datetime | None = None
    ) -> str:
        return self._render(
            now or self.now,
            messages=[{"role": role, "content": content} for role, content in messages],
            tools=None,
            documents=None,
            add_generation_prompt=generation,
            **self.context,
        )

    def maybe(self, messages: Sequence[Message], generation: bool) -> str | None:
        try:
            return self(messages, generation)
        except _Refused:
            return None


# ---------------------------------------------------------------------------------------------
# learning the template's shape from sentinel conversations


def _mark(tag: str) -> str:
    return f"\x00{tag}\x00"


# Mixed case, so that a template that changes the text's case is caught.
S0, S2, U1, U2, A1 = (_mark(t) for t in ("Sa", "Sb", "Ua", "Ub", "Aa"))
BOS, EOS = _mark("Bos"), _mark("Eos")
_SENTINEL_OF = {"bos_token": BOS, "eos_token": EOS}
_SPACE = " \t\r\n"


def _cannot(why: str) -> BadInputError:
    return BadInputError(
        f"The model's chat template cannot be turned into an Ollama template ({why}); publish "
        "it with an Ollama template written by hand or with its base model's template."
    )


def _spans(text: str, marks: Sequence[str]) -> list[tuple[int, int]] | None:
    """Where each sentinel stands in `text`, each exactly once and in this order; else None."""
    spans: list[tuple[int, int]] = []
    end = 0
    for mark in marks:
        start = text.find(mark, end)
        if start < 0 or text.count(mark) != 1:
            return None
        spans.append((start, start + len(mark)))
        end = start + len(mark)
    return spans


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class _Shape:
    """The pieces learned from the sentinel renders (sentinel BOS/EOS still in them)."""

    lead: str = ""  # what comes before the first user turn when there is no system message
    up: str = ""  # user prefix and suffix
    us: str = ""
    ap: str = ""  # assistant prefix and suffix
    as_: str = ""
    gen: str = ""  # the generation prompt
    prologue: str = ""  # what comes before everything
    system: str = "native"  # "native" (a turn of its own), "fold" (inside a user turn), "none"
    fold: str | None = None  # "first" or "last": the user turn the system prompt goes into
    sp: str = ""  # system prefix and suffix (native)
    ss: str = ""
    f1: str = ""  # before and after the system text inside the user turn (fold)
    f2: str = ""
    default: str | None = None  # the default system text written when none is given
    later: tuple[str, str] | None = None  # how a system message after the first turn is written
    later_dropped: bool = False  # the Go template leaves system messages after the first out
    later_note: str | None = None  # why, where the Jinja template does not leave them out too


_TURNS = (("user", U1), ("assistant", A1), ("user", U2))


def _learn(jinja: _Jinja) -> _Shape:
    try:
        r3 = jinja(_TURNS, True)
        r1 = jinja([("user", U1)], True)
    except _Refused as error:
        raise _cannot(f"it fails on a plain conversation: {error}") from None
    spans = _spans(r3, [U1, A1, U2])
    if spans is None:
        raise _cannot("it does not write the messages' text as it is")
    (u1, e1), (a1, ea), (u2, e2) = spans
    head, m1, m2, tail = r3[:u1], r3[e1:a1], r3[ea:u2], r3[e2:]
    if r1 != head + U1 + tail:
        raise _cannot("it writes the last user turn differently from earlier ones")
    shape = _Shape()
    # The assistant's suffix is what closes a final assistant turn, less an end-of-text some
    # templates write after the whole conversation (Phi-3); the rest of m2 is the user prefix.
    closed = jinja.maybe(_TURNS[:2], False) or ""
    closing = closed[ea:] if closed.startswith(r3[:ea]) else ""
    fits = [c for c in (closing, closing.removesuffix(EOS)) if m2.startswith(c)]
    shape.as_ = fits[0] if fits else m2[: _common_prefix(closing, m2)]
    shape.up = m2[len(shape.as_) :]
    if not head.endswith(shape.up):
        raise _cannot("it starts the first user turn differently from later ones")
    shape.lead = head[: len(head) - len(shape.up)]
    # m1 = user suffix + assistant prefix and tail = user suffix + generation prompt; the
    # generation prompt is what add_generation_prompt adds, where that splits them cleanly.
    plain = jinja.maybe(_TURNS, False) or ""
    added = r3[_common_prefix(r3, plain) :]
    n = len(m1) - len(added)
    if added and m1.endswith(added) and tail == m1[:n] + added:
        shape.us, shape.ap, shape.gen = m1[:n], added, added
    else:
        n = _common_prefix(m1, tail)
        shape.us, shape.ap, shape.gen = m1[:n], m1[n:], tail[n:]
    _learn_system(jinja, shape, r3, spans)
    return shape


def _learn_system(  # noqa: PLR0912
    jinja: _Jinja, shape: _Shape, r3: str, spans: list[tuple[int, int]]
) -> None:
    (u1, _), (_, ea), (u2, _) = spans
    rs = jinja.maybe([("system", S0), *_TURNS], True)
    if rs is None or S0 not in rs:
        shape.system, shape.prologue = "none", shape.lead
        return
    if not (_spans(rs, [S0, U1, A1, U2]) or _spans(rs, [U1, A1, S0, U2])):
        raise _cannot("it writes the system prompt where an Ollama template cannot")
    s0, rs_u1, rs_u2 = rs.index(S0), rs.index(U1), rs.index(U2)
    if rs[rs_u2:] != r3[u2:]:
        raise _cannot("a system prompt changes how it writes the last turn")
    if s0 < rs_u1:
        pre, mid = rs[:s0], rs[s0 + len(S0) : rs_u1]
        if rs[rs_u1:] != r3[u1:]:
            raise _cannot("a system prompt changes how it writes the later turns")
        if mid.endswith(shape.up):
            shape.prologue = BOS if pre.startswith(BOS) else ""
            shape.sp = pre[len(shape.prologue) :]
            shape.ss = mid[: len(mid) - len(shape.up)]
            lead, opened = shape.lead, shape.prologue + shape.sp
            if lead != shape.prologue:
                if not (
                    lead.startswith(opened)
                    and lead.endswith(shape.ss)
                    and len(opened) + len(shape.ss) <= len(lead)
                ):
                    raise _cannot("what it writes when there is no system prompt is no system turn")
                shape.default = lead[len(opened) : len(lead) - len(shape.ss)]
        elif pre.startswith(shape.lead + shape.up):
            shape.system, shape.fold, shape.prologue = "fold", "first", shape.lead
            shape.f1, shape.f2 = pre[len(shape.lead + shape.up) :], mid
        else:
            raise _cannot("it writes the system prompt where an Ollama template cannot")
    else:  # after the assistant turn, inside the last user turn
        before = r3[:u2]
        if not rs[:s0].startswith(before):
            raise _cannot("a system prompt changes how it writes the earlier turns")
        shape.system, shape.fold, shape.prologue = "fold", "last", shape.lead
        shape.f1, shape.f2 = rs[len(before) : s0], rs[s0 + len(S0) : rs_u2]
    rl = jinja.maybe([*_TURNS[:2], ("system", S2), _TURNS[2]], True)
    if rl is not None and S2 not in rl:
        shape.later_dropped = True  # as the Jinja template does
        return
    if shape.system != "native":
        shape.later_dropped = True
        shape.later_note = (
            "The Ollama template leaves out system messages after the first turn, "
            + ("which the chat template refuses." if rl is None else "as it cannot place them.")
        )
        return
    if rl is None:
        return  # refused: written like the first one
    base = r3[:ea] + shape.as_
    if _spans(rl, [U1, A1, S2, U2]) and rl.startswith(base):
        s2, rl_u2 = rl.index(S2), rl.index(U2)
        between = rl[s2 + len(S2) : rl_u2]
        if between.endswith(shape.up) and rl[rl_u2:] == r3[u2:]:
            shape.later = (rl[len(base) : s2], between[: len(between) - len(shape.up)])


# ---------------------------------------------------------------------------------------------
# the plan of the Go template, the Go template itself, and a Python twin of it


@dataclass(frozen=True)
class _Plan:
    """The shape of the Go template, as literal text (the special tokens in place)."""

    prologue: str  # before the messages
    guard: str | None  # written before message 0 when it is not a system message
    user: tuple[str, str]  # prefix, suffix
    user_bos: str  # before the user prefix, except where it would start the prompt
    assistant: tuple[str, str]
    generation: str
    fold: str | None  # None, "first" or "last": the user turn a system message at 0 goes into
    fold_around: tuple[str, str]  # before and after its text there
    system_first: tuple[str, str] | None  # a system message at index 0 as a turn of its own
    system_later: tuple[str, str] | None  # later system messages; None: left out
    default_system: str | None  # to publish as SYSTEM, which Ollama sends as a system message


def _plan(shape: _Shape, tokens: Mapping[str, str]) -> _Plan:
    """The real special tokens in place of the sentinels, and no BOS at the very start."""

    def real(text: str) -> str:
        for key, token in tokens.items():
            text = text.replace(_SENTINEL_OF[key], token)
        return text

    prologue, up, sp = shape.prologue, shape.up, shape.sp
    user_bos = ""
    if prologue.startswith(BOS):
        prologue = prologue[len(BOS) :]
    elif not prologue:
        sp = sp.removeprefix(BOS)  # a system turn at index 0 always starts the prompt
        if up.startswith(BOS):
            user_bos, up = BOS, up[len(BOS) :]
    native = shape.system == "native"
    first = (real(sp), real(shape.ss)) if native else None
    later = None
    if native and not shape.later_dropped:
        later = (real(shape.later[0]), real(shape.later[1])) if shape.later else first
    return _Plan(
        prologue=real(prologue),
        guard=real(sp + shape.ss) if native and shape.default == "" else None,
        user=(real(up), real(shape.us)),
        user_bos=real(user_bos),
        assistant=(real(shape.ap), real(shape.as_)),
        generation=real(shape.gen),
        fold=shape.fold,
        fold_around=(real(shape.f1), real(shape.f2)),
        system_first=first,
        system_later=later,
        default_system=real(shape.default) if shape.default else None,
    )


def _bos_everywhere_but_first(plan: _Plan) -> bool:
    """Whether a system message at index 0 writes nothing before the user turn."""
    return plan.system_first is None and plan.fold != "first"


def _simulate(plan: _Plan, messages: Sequence[Message]) -> str:  # noqa: PLR0912
    """What the Go template from `_emit` writes for these messages (as Ollama passes them)."""
    out = [plan.prologue]
    first_is_system = bool(messages) and messages[0][0] == "system"
    up, us = plan.user
    ap, as_ = plan.assistant
    f1, f2 = plan.fold_around
    for i, (role, content) in enumerate(messages):
        last = i == len(messages) - 1
        if plan.guard is not None and i == 0 and role != "system":
            out.append(plan.guard)
        if role == "user":
            if _bos_everywhere_but_first(plan):
                bos_here = i > 1 or (i == 1 and not first_is_system)
            else:
                bos_here = i > 0
            if not (plan.fold == "first" and i == 1 and first_is_system):
                out += [plan.user_bos if bos_here else "", up]
            if plan.fold == "last" and last and first_is_system:
                out += [f1, messages[0][1], f2]
            out += [content, us]
        elif role == "assistant":
            out += [ap, content, "" if last else as_]
        elif role == "system":
            if plan.system_first is not None:
                pair = plan.system_first if i == 0 else plan.system_later
                if pair is not None:
                    out += [pair[0], content, pair[1]]
            elif plan.fold == "first" and i == 0:
                out += [up, f1, content, f2]
        if last and role != "assistant":
            out.append(plan.generation)
    return "".join(out)


def _go_literal(text: str, *, line_end: bool = False) -> str:
    """Literal text in a Go template: as it is where that is safe, else as a quoted string.

    Text that would open an action (`{{`, or a `{` just before one) is quoted, and so is text that
    ends a line in white space, since the next line's `{{-` would eat that white space.
    """
    if not text:
        return ""
    unsafe = "{{" in text or text.endswith("{") or (line_end and text.rstrip(_SPACE) != text)
    return "{{ " + _go_quote(text) + " }}" if unsafe else text


def _go_quote(text: str) -> str:
    out = ['"']
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


_FIRST_IS_SYSTEM = '(eq (index $.Messages 0).Role "system")'


def _emit(plan: _Plan) -> str:
    """The Go template: one line per branch, with literal text quoted where it must be."""
    lit = _go_literal
    lines = [lit(plan.prologue, line_end=True) + "{{- range $i, $_ := .Messages }}"]
    lines.append("{{- $last := eq (len (slice $.Messages $i)) 1 }}")
    if plan.guard is not None:
        lines.append('{{- if and (eq $i 0) (ne .Role "system") }}' + lit(plan.guard) + "{{ end }}")
    lines.append('{{- if eq .Role "user" }}' + _emit_user(plan))
    ap, as_ = plan.assistant
    assistant = lit(ap) + "{{ .Content }}"
    if as_:
        assistant += "{{ if not $last }}" + lit(as_) + "{{ end }}"
    lines.append('{{- else if eq .Role "assistant" }}' + assistant)
    system = _emit_system(plan)
    if system:
        lines.append('{{- else if eq .Role "system" }}' + system)
    lines.append("{{- end }}")
    if plan.generation:
        lines.append(
            '{{- if and $last (ne .Role "assistant") }}' + lit(plan.generation) + "{{ end }}"
        )
    lines.append("{{- end }}")
    return "\n".join(lines)


def _emit_user(plan: _Plan) -> str:
    lit = _go_literal
    up, us = plan.user
    f1, f2 = plan.fold_around
    user = lit(up)
    if plan.user_bos:
        if _bos_everywhere_but_first(plan):
            where = f"or (gt $i 1) (and (eq $i 1) (not {_FIRST_IS_SYSTEM}))"
        else:
            where = "$i"
        user = "{{ if " + where + " }}" + lit(plan.user_bos) + "{{ end }}" + user
    if plan.fold == "first" and user:
        user = "{{ if or (ne $i 1) (not " + _FIRST_IS_SYSTEM + ") }}" + user + "{{ end }}"
    if plan.fold == "last":
        user += "{{ if and $last " + _FIRST_IS_SYSTEM + " }}" + lit(f1)
        user += "{{ (index $.Messages 0).Content }}" + lit(f2) + "{{ end }}"
    return user + "{{ .Content }}" + lit(us, line_end=True)


def _emit_system(plan: _Plan) -> str:
    up, _ = plan.user
    f1, f2 = plan.fold_around
    if plan.system_first is None:
        if plan.fold == "first":
            return "{{ if eq $i 0 }}" + _turn((up + f1, f2)) + "{{ end }}"
        return ""
    if plan.system_later == plan.system_first:
        return _turn(plan.system_first, line_end=True)
    system = "{{ if eq $i 0 }}" + _turn(plan.system_first)
    if plan.system_later is not None:
        system += "{{ else }}" + _turn(plan.system_later)
    return system + "{{ end }}"


def _turn(pair: tuple[str, str], *, line_end: bool = False) -> str:
    return _go_literal(pair[0]) + "{{ .Content }}" + _go_literal(pair[1], line_end=line_end)


# ---------------------------------------------------------------------------------------------
# stop sequences, the check against the Jinja template, and the whole derivation


def _stops(shape: _Shape, special: Mapping[str, Any]) -> tuple[str, ...]:
    eos = _token_text(special.get("eos_token")) or ""
    end = shape.as_.strip(_SPACE)
    stops = [end.replace(EOS, eos), eos]
    extra = special.get(GENERATION_EOS_KEY)
    if isinstance(extra, list):
        stops += [t for t in map(_token_text, extra) if t]
    if end in ("", EOS):  # no end-of-turn marker but EOS: the next user turn also ends an answer
        stops.append(shape.up.replace(BOS, "").strip(_SPACE).replace(EOS, eos))
    unique: list[str] = []
    for stop in stops:
        if stop and "\x00" not in stop and stop not in unique:
            unique.append(stop)
    return tuple(unique)


_TEXT = {
    "S": "You are a terse assistant.",
    "U1": "Hello there.",
    "A1": "Hi! How can I help?",
    "U2": "Tell me a joke about {{ braces }}.",
    "A2": "Why did the chicken cross the road?\nTo get to the other side.",
    "U3": "Thanks.",
    "S2": "Answer in French from now on.",
}


def _probes(plan: _Plan) -> list[tuple[str, list[Message]]]:
    t = _TEXT
    chat = [("user", t["U1"]), ("assistant", t["A1"]), ("user", t["U2"])]
    longer = [*chat, ("assistant", t["A2"]), ("user", t["U3"])]
    system = ("system", t["S"])
    probes = [
        ("one user turn", chat[:1]),
        ("two user turns", chat),
        ("three user turns", longer),
        ("a system prompt and one user turn", [system, *chat[:1]]),
        ("a system prompt and two user turns", [system, *chat]),
        ("a system prompt and three user turns", [system, *longer]),
    ]
    if plan.system_later is not None:
        probes.append(
            ("a system message after the first turn", [*chat[:2], ("system", t["S2"]), chat[2]])
        )
        probes.append(("two system messages", [system, *chat[:2], ("system", t["S2"]), chat[2]]))
    return probes


def _check(plan: _Plan, real: _Jinja, marked: _Jinja, bos: str) -> None:
    for label, messages in _probes(plan):
        try:
            expected = real(messages, True)
        except _Refused as error:
            if any(role == "system" for role, _ in messages):
                continue  # no system role: nothing to be equal to
            raise _cannot(f"it fails on a conversation with {label}: {error}") from None
        if (marked.maybe(messages, True) or "").startswith(BOS):
            expected = expected.removeprefix(bos)
        sent = list(messages)
        if plan.default_system is not None and sent[0][0] != "system":
            sent.insert(0, ("system", plan.default_system))
        if _simulate(plan, sent) != expected:
            raise _cannot(
                f"it writes a conversation with {label} in a way the Ollama template cannot"
            )


def derive_from_jinja(
    source: str, special: Mapping[str, Any], *, now: datetime | None = None
) -> OllamaTemplate:
    """The Ollama template, stop sequences and default system prompt of a Jinja chat template.

    `special` holds the tokenizer's special tokens (bos_token, eos_token, ... as from
    `read_chat_template`); `now` is the date `strftime_now` gives the template (default: today).
    """
    now = now or datetime.now()
    render = _compile(source)
    tokens = {k: t for k in _SENTINEL_OF if (t := _token_text(special.get(k)))}
    marked = _Jinja(render, special, {k: _SENTINEL_OF[k] for k in tokens}, now)
    real = _Jinja(render, special, {}, now)
    shape = _learn(marked)
    plan = _plan(shape, tokens)
    _check(plan, real, marked, tokens.get("bos_token", ""))
    notes: list[str] = []
    if shape.system == "none":
        notes.append(
            "The chat template has no system role, so the Ollama template leaves system "
            "prompts out."
        )
    elif shape.later_note:
        notes.append(shape.later_note)
    if _writes_the_date(marked):
        notes.append(
            f"The chat template writes today's date, so the Ollama template keeps the date it was "
            f"made on ({now:%Y-%m-%d})."
        )
    return OllamaTemplate(_emit(plan), _stops(shape, special), plan.default_system, tuple(notes))


def _writes_the_date(jinja: _Jinja) -> bool:
    other = jinja.now + timedelta(days=400, hours=13, minutes=17)
    for messages in ([("user", U1)], [("system", S0), ("user", U1)]):
        try:
            if jinja(messages, True) != jinja(messages, True, other):
                return True
        except _Refused:
            continue
    return False
