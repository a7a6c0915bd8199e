"""A renderer for the subset of Go's text/template that Ollama model templates use.

Tests render the Go templates the app derives and compare them with what the Jinja chat template
gives, so this follows Go (1.18+) where it matters: `{{-`/`-}}` trim all spaces, tabs, carriage
returns and newlines next to the action; `and`/`or` stop at the first falsy/truthy argument and
return it; `len` and `slice` of a string count bytes; variables are scoped to the control structure
they are declared in, and a `range` body's own variables live for one iteration; maps (Python dicts)
give nil for a missing key (Ollama parses with `missingkey=zero`) while structs (`Struct`) raise.

Supported: text, comments, `.Field` chains, `.`, `$`, `$var` (with field chains), `(pipeline)`
(with field chains), string/raw-string/integer/true/false/nil literals, pipes, `$x := ...`,
`$x = ...`, `if`/`else if`/`else`, `with`/`else with`/`else`, `range` (with `else`, one or two
variables, `break`, `continue`), and the functions eq, ne, lt, le, gt, ge, and, or, not, len,
index, slice, print. Anything else raises `GoTemplateError` instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SPACES = " \t\r\n"
KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue"}
UNSUPPORTED_KEYWORDS = {"define", "template", "block"}


class GoTemplateError(Exception):
    """The template is not valid Go, or uses something this renderer does not support."""


class Struct(dict[str, Any]):
    """A Go struct: a missing field is an error, as Go reports it (maps give nil instead)."""


# ---------------------------------------------------------------------------------------------
# lexing


@dataclass
class _Tok:
    kind: str  # str, raw, num, field, var, dot, ident, lparen, rparen, pipe, comma, declare, assign
    value: Any
    chain: tuple[str, ...] = ()  # fields after a variable: $x.A.B


@dataclass
class _Action:
    tokens: list[_Tok]
    where: int  # offset in the source, for messages


def _lex(source: str) -> list[str | _Action]:
    items: list[str | _Action] = []
    pos = 0
    trim_next = False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if trim_next:
            text = text.lstrip(SPACES)
        if start < 0:
            if text:
                items.append(text)
            return items
        inner = start + 2
        if source[inner : inner + 1] == "-" and source[inner + 1 : inner + 2] in tuple(SPACES):
            text = text.rstrip(SPACES)
            inner += 2
        if text:
            items.append(text)
        if source.startswith("/*", inner):
            close = source.find("*/", inner + 2)
            if close < 0:
                raise GoTemplateError(f"unclosed comment at offset {start}")
            after = close + 2
            trim_next = False
            if source[after : after + 1] in tuple(SPACES) and source.startswith("-}}", after + 1):
                trim_next = True
                after += 1 + 3
            elif source.startswith("}}", after):
                after += 2
            else:
                raise GoTemplateError(f"comment ends without closing delimiter at offset {start}")
            pos = after
            continue
        tokens, pos, trim_next = _lex_action(source, inner, start)
        items.append(_Action(tokens, start))


def _lex_action(source: str, pos: int, start: int) -> tuple[list[_Tok], int, bool]:
    tokens: list[_Tok] = []
    n = len(source)
    while True:
        if pos >= n:
            raise GoTemplateError(f"unclosed action at offset {start}")
        if source[pos] in SPACES and source.startswith("-}}", pos + 1):
            return tokens, pos + 4, True
        if source.startswith("}}", pos):
            return tokens, pos + 2, False
        c = source[pos]
        if c in SPACES:
            pos += 1
        elif c == '"':
            end = pos + 1
            while end < n and source[end] != '"':
                if source[end] == "\\":
                    end += 1
                if source[end] == "\n":
                    raise GoTemplateError(f"newline in string at offset {pos}")
                end += 1
            if end >= n:
                raise GoTemplateError(f"unterminated string at offset {pos}")
            tokens.append(_Tok("str", _unquote(source[pos : end + 1])))
            pos = end + 1
        elif c == "`":
            end = source.find("`", pos + 1)
            if end < 0:
                raise GoTemplateError(f"unterminated raw string at offset {pos}")
            tokens.append(_Tok("str", source[pos + 1 : end]))
            pos = end + 1
        elif c.isdigit() or (c == "-" and source[pos + 1 : pos + 2].isdigit()):
            end = pos + 1
            while end < n and (source[end].isalnum() or source[end] in "._"):
                end += 1
            word = source[pos:end]
            try:
                tokens.append(_Tok("num", int(word, 0)))
            except ValueError:
                raise GoTemplateError(f"unsupported number {word!r}") from None
            pos = end
        elif c == ".":
            names, pos = _lex_chain(source, pos)
            if names:
                tokens.append(_Tok("field", tuple(names)))
            else:
                tokens.append(_Tok("dot", None))
        elif c == "$":
            end = pos + 1
            while end < n and (source[end].isalnum() or source[end] == "_"):
                end += 1
            name = source[pos:end]
            chain, end = _lex_chain(source, end)
            tokens.append(_Tok("var", name, tuple(chain)))
            pos = end
        elif c.isalpha() or c == "_":
            end = pos + 1
            while end < n and (source[end].isalnum() or source[end] == "_"):
                end += 1
            tokens.append(_Tok("ident", source[pos:end]))
            pos = end
        elif c == "(":
            tokens.append(_Tok("lparen", None))
            pos += 1
        elif c == ")":
            chain, end = _lex_chain(source, pos + 1)
            tokens.append(_Tok("rparen", None, tuple(chain)))
            pos = end
        elif c == "|":
            tokens.append(_Tok("pipe", None))
            pos += 1
        elif c == ",":
            tokens.append(_Tok("comma", None))
            pos += 1
        elif source.startswith(":=", pos):
            tokens.append(_Tok("declare", None))
            pos += 2
        elif c == "=":
            tokens.append(_Tok("assign", None))
            pos += 1
        else:
            raise GoTemplateError(f"unexpected {c!r} in action at offset {pos}")


def _lex_chain(source: str, pos: int) -> tuple[list[str], int]:
    """Field names written right after a term: `.A.B` (an empty list for a lone `.`)."""
    names: list[str] = []
    while pos < len(source) and source[pos] == ".":
        end = pos + 1
        while end < len(source) and (source[end].isalnum() or source[end] == "_"):
            end += 1
        if end == pos + 1:
            if names:
                raise GoTemplateError(f"bad field chain at offset {pos}")
            return names, pos + 1
        names.append(source[pos + 1 : end])
        pos = end
    return names, pos


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "a": "\a", "b": "\b"}
_ESCAPES |= {"f": "\f", "v": "\v", "'": "'"}


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    out: list[str] = []
    raw = bytearray()  # \x escapes are bytes in Go
    i = 0

    def flush() -> None:
        if raw:
            out.append(raw.decode("utf-8", errors="replace"))
            raw.clear()

    while i < len(body):
        c = body[i]
        if c != "\\":
            flush()
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        if e in _ESCAPES:
            flush()
            out.append(_ESCAPES[e])
            i += 2
        elif e == "x":
            raw.append(int(body[i + 2 : i + 4], 16))
            i += 4
        elif e in "uU":
            width = 4 if e == "u" else 8
            flush()
            out.append(chr(int(body[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        elif e in "01234567":
            raw.append(int(body[i + 1 : i + 4], 8))
            i += 4
        else:
            raise GoTemplateError(f"unknown escape \\{e} in {literal}")
    flush()
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# parsing


@dataclass
class _Pipeline:
    decl: list[str]
    assign: bool
    commands: list[list[Any]]  # each a list of operands


@dataclass
class _Text:
    text: str


@dataclass
class _Print:
    pipe: _Pipeline


@dataclass
class _Branch:
    kind: str  # if, with, range
    pipe: _Pipeline
    body: list[Any]
    orelse: list[Any] = field(default_factory=list)


@dataclass
class _LoopControl:
    kind: str  # break, continue


@dataclass
class _Operand:
    kind: str  # literal, field, var, dot, ident, paren
    value: Any
    chain: tuple[str, ...] = ()


class _Parser:
    def __init__(self, items: list[str | _Action]) -> None:
        self.items = items
        self.pos = 0
        self.loop_depth = 0

    def parse(self) -> list[Any]:
        nodes, stop = self.parse_list()
        if stop is not None:
            raise GoTemplateError(f"unexpected {{{{ {stop[0]} }}}} at offset {stop[1].where}")
        return nodes

    def parse_list(self) -> tuple[list[Any], tuple[str, _Action] | None]:
        nodes: list[Any] = []
        while self.pos < len(self.items):
            item = self.items[self.pos]
            self.pos += 1
            if isinstance(item, str):
                nodes.append(_Text(item))
                continue
            toks = item.tokens
            if not toks:
                raise GoTemplateError(f"empty action at offset {item.where}")
            head = toks[0]
            word = head.value if head.kind == "ident" else None
            if word in UNSUPPORTED_KEYWORDS:
                raise GoTemplateError(f"{word!r} is not supported (offset {item.where})")
            if word in ("end", "else"):
                return nodes, (word, item)
            if word in ("if", "with", "range"):
                nodes.append(self.parse_branch(word, toks[1:], item))
            elif word in ("break", "continue"):
                if self.loop_depth == 0 or len(toks) != 1:
                    raise GoTemplateError(f"{{{{{word}}}}} outside a range at offset {item.where}")
                nodes.append(_LoopControl(word))
            else:
                nodes.append(_Print(_parse_pipeline(toks, item.where)))
        return nodes, None

    def parse_branch(self, kind: str, toks: list[_Tok], item: _Action) -> _Branch:
        pipe = _parse_pipeline(toks, item.where, allow_two=kind == "range")
        if kind == "range":
            self.loop_depth += 1
        body, stop = self.parse_list()
        if kind == "range":
            self.loop_depth -= 1
        if stop is None:
            raise GoTemplateError(f"{{{{ {kind} }}}} at offset {item.where} has no {{{{ end }}}}")
        branch = _Branch(kind, pipe, body)
        word, action = stop
        if word == "end":
            if len(action.tokens) != 1:
                raise GoTemplateError(f"unexpected words after end at offset {action.where}")
            return branch
        rest = action.tokens[1:]
        if rest:  # else if / else with: the rest of the chain sits inside the else list
            chained = rest[0].value if rest[0].kind == "ident" else None
            if chained not in ("if", "with") or kind == "range":
                raise GoTemplateError(f"unexpected words after else at offset {action.where}")
            branch.orelse = [self.parse_branch(chained, rest[1:], action)]
            return branch
        branch.orelse, stop = self.parse_list()
        if stop is None or stop[0] != "end" or len(stop[1].tokens) != 1:
            raise GoTemplateError(f"{{{{ else }}}} at offset {action.where} has no {{{{ end }}}}")
        return branch


def _parse_pipeline(toks: list[_Tok], where: int, *, allow_two: bool = False) -> _Pipeline:
    decl: list[str] = []
    assign = False
    for i, tok in enumerate(toks):
        if tok.kind in ("declare", "assign"):
            names = toks[:i]
            shape_ok = all(t.kind == "var" and not t.chain for t in names[::2]) and all(
                t.kind == "comma" for t in names[1::2]
            )
            if not names or not shape_ok or len(names) % 2 == 0:
                raise GoTemplateError(f"bad variable declaration at offset {where}")
            decl = [t.value for t in names[::2]]
            if len(decl) > (2 if allow_two else 1):
                raise GoTemplateError(f"too many variables declared at offset {where}")
            assign = tok.kind == "assign"
            toks = toks[i + 1 :]
            break
    commands: list[list[Any]] = [[]]
    stream = iter(toks)
    for tok in stream:
        if tok.kind == "pipe":
            commands.append([])
            continue
        commands[-1].append(_operand(tok, stream, where))
    if any(not c for c in commands):
        raise GoTemplateError(f"missing command in pipeline at offset {where}")
    return _Pipeline(decl, assign, commands)


def _operand(tok: _Tok, stream: Iterable[_Tok], where: int) -> _Operand:
    if tok.kind == "str" or tok.kind == "num":
        return _Operand("literal", tok.value)
    if tok.kind == "field":
        return _Operand("field", None, tok.value)
    if tok.kind == "var":
        return _Operand("var", tok.value, tok.chain)
    if tok.kind == "dot":
        return _Operand("dot", None)
    if tok.kind == "ident":
        if tok.value in ("true", "false"):
            return _Operand("literal", tok.value == "true")
        if tok.value == "nil":
            return _Operand("literal", None)
        if tok.value in KEYWORDS:
            raise GoTemplateError(f"unexpected {tok.value!r} at offset {where}")
        if tok.value not in FUNCTIONS:
            raise GoTemplateError(f"function {tok.value!r} not defined (offset {where})")
        return _Operand("ident", tok.value)
    if tok.kind == "lparen":
        depth, inner = 1, []
        for t in stream:
            depth += (t.kind == "lparen") - (t.kind == "rparen")
            if depth == 0:
                return _Operand("paren", _parse_pipeline(inner, where), t.chain)
            inner.append(t)
        raise GoTemplateError(f"unclosed parenthesis at offset {where}")
    raise GoTemplateError(f"unexpected {tok.kind} at offset {where}")


# ---------------------------------------------------------------------------------------------
# evaluation


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def truth(value: Any) -> bool:
    """Go's notion of a true value: non-zero, non-empty, non-nil (a struct is always true)."""
    if isinstance(value, Struct):
        return True
    if value is None:
        return False
    if isinstance(value, bool | int | float):
        return bool(value)
    if isinstance(value, str | list | tuple | dict):
        return len(value) > 0
    return True


def _show(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(_show(v) for v in value) + "]"
    raise GoTemplateError(f"printing a {type(value).__name__} is not supported")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "nil"
    raise GoTemplateError(f"cannot compare a {type(value).__name__}")


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise GoTemplateError("eq: missing argument for comparison")
    for other in others:
        if _kind(first) != _kind(other):
            raise GoTemplateError(
                f"incompatible types for comparison: {_kind(first)} and {_kind(other)}"
            )
        if first == other:
            return True
    return False


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        if _kind(a) != _kind(b) or _kind(a) not in ("int", "string"):
            raise GoTemplateError(f"incompatible types for comparison: {_kind(a)} and {_kind(b)}")
        return op(a, b)

    return compare


def _len(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, list | tuple | dict):
        return len(value)
    raise GoTemplateError(f"len of type {type(value).__name__}")


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GoTemplateError(f"cannot index with {value!r}")
    return value


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, dict):
            item = item.get(key)
        elif isinstance(item, list | tuple | str):
            i = _int(key)
            if not 0 <= i < len(item):
                raise GoTemplateError(f"error calling index: index out of range: {i}")
            item = item[i] if not isinstance(item, str) else item.encode()[i]
        else:
            raise GoTemplateError(f"can't index item of type {type(item).__name__}")
    return item


def _slice(item: Any, *bounds: Any) -> Any:
    if len(bounds) > 3 or (len(bounds) == 3 and isinstance(item, str)):
        raise GoTemplateError("error calling slice: too many slice indexes")
    seq = item.encode() if isinstance(item, str) else item
    if not isinstance(seq, list | tuple | bytes):
        raise GoTemplateError(f"can't slice item of type {type(item).__name__}")
    idx = [_int(b) for b in bounds]
    start = idx[0] if idx else 0
    end = idx[1] if len(idx) > 1 else len(seq)
    if not 0 <= start <= end <= len(seq):
        raise GoTemplateError(f"error calling slice: index out of range: {start}:{end}")
    out = seq[start:end]
    return out.decode() if isinstance(out, bytes) else list(out)


def _sprint(values: Sequence[Any]) -> str:
    """fmt.Sprint: a space between two operands when neither is a string."""
    out: list[str] = []
    for i, v in enumerate(values):
        if i and not isinstance(v, str) and not isinstance(values[i - 1], str):
            out.append(" ")
        out.append(_show(v))
    return "".join(out)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _ordered(lambda a, b: a < b),
    "le": _ordered(lambda a, b: a <= b),
    "gt": _ordered(lambda a, b: a > b),
    "ge": _ordered(lambda a, b: a >= b),
    "not": lambda a: not truth(a),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": lambda *a: _sprint(a),
    "and": lambda *a: None,  # evaluated lazily, below
    "or": lambda *a: None,
}


class _Vars:
    def __init__(self, root: Any) -> None:
        self.stack: list[list[Any]] = [["$", root]]

    def mark(self) -> int:
        return len(self.stack)

    def pop(self, mark: int) -> None:
        del self.stack[mark:]

    def push(self, name: str, value: Any) -> None:
        self.stack.append([name, value])

    def slot(self, name: str) -> list[Any]:
        for entry in reversed(self.stack):
            if entry[0] == name:
                return entry
        raise GoTemplateError(f"undefined variable: {name}")


class _Executor:
    def __init__(self, root: Any) -> None:
        self.vars = _Vars(root)
        self.out: list[str] = []

    def walk(self, nodes: list[Any], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.out.append(node.text)
            elif isinstance(node, _Print):
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.decl:
                    self.out.append(_show(value))
            elif isinstance(node, _LoopControl):
                raise _Break() if node.kind == "break" else _Continue()
            elif node.kind == "range":
                self.walk_range(node, dot)
            else:
                mark = self.vars.mark()
                value = self.pipeline(node.pipe, dot)
                if truth(value):
                    self.walk(node.body, value if node.kind == "with" else dot)
                else:
                    self.walk(node.orelse, dot)
                self.vars.pop(mark)

    def walk_range(self, node: _Branch, dot: Any) -> None:
        mark = self.vars.mark()
        pipe = node.pipe
        value = self.pipeline(_Pipeline([], False, pipe.commands), dot)
        if isinstance(value, dict):
            pairs = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list | tuple):
            pairs = list(enumerate(value))
        elif value is None:
            pairs = []
        else:
            raise GoTemplateError(f"range can't iterate over {value!r}")
        if pipe.decl and not pipe.assign:
            for name in pipe.decl:
                self.vars.push(name, None)
        for key, elem in pairs:
            if pipe.decl:
                names = pipe.decl
                values = [key, elem] if len(names) == 2 else [elem]
                for name, v in zip(names, values, strict=True):
                    self.vars.slot(name)[1] = v
            inner = self.vars.mark()
            try:
                self.walk(node.body, elem)
            except _Break:
                self.vars.pop(inner)
                break
            except _Continue:
                pass
            self.vars.pop(inner)
        if not pairs:
            self.walk(node.orelse, dot)
        self.vars.pop(mark)

    def pipeline(self, pipe: _Pipeline, dot: Any) -> Any:
        value: Any = None
        piped = False
        for command in pipe.commands:
            value = self.command(command, dot, value if piped else _NOTHING)
            piped = True
        for name in pipe.decl:
            if pipe.assign:
                self.vars.slot(name)[1] = value
            else:
                self.vars.push(name, value)
        return value

    def command(self, operands: list[_Operand], dot: Any, piped: Any) -> Any:
        first = operands[0]
        if first.kind == "ident":
            args: list[Any] = operands[1:]
            if piped is not _NOTHING:
                args = [*args, _Given(piped)]
            if first.value in ("and", "or"):
                if not args:
                    raise GoTemplateError(f"{first.value}: missing arguments")
                result: Any = None
                for arg in args:
                    result = self.arg(arg, dot)
                    if truth(result) == (first.value == "or"):
                        return result
                return result
            return FUNCTIONS[first.value](*(self.arg(a, dot) for a in args))
        if len(operands) > 1 or piped is not _NOTHING:
            raise GoTemplateError(f"can't give arguments to a non-function {first.kind}")
        return self.operand(first, dot)

    def arg(self, arg: Any, dot: Any) -> Any:
        if isinstance(arg, _Given):
            return arg.value
        if arg.kind == "ident":
            return self.command([arg], dot, _NOTHING)  # a function with no arguments
        return self.operand(arg, dot)

    def operand(self, op: _Operand, dot: Any) -> Any:
        if op.kind == "literal":
            return op.value
        if op.kind == "dot":
            return dot
        if op.kind == "field":
            return _fields(dot, op.chain)
        if op.kind == "var":
            return _fields(self.vars.slot(op.value)[1], op.chain)
        if op.kind == "paren":
            return _fields(self.pipeline(op.value, dot), op.chain)
        raise GoTemplateError(f"unexpected operand {op.kind}")


class _Nothing:
    pass


_NOTHING = _Nothing()


@dataclass
class _Given:
    value: Any


def _fields(value: Any, chain: Sequence[str]) -> Any:
    for name in chain:
        if isinstance(value, Struct):
            if name not in value:
                raise GoTemplateError(f"can't evaluate field {name} in a struct")
            value = value[name]
        elif isinstance(value, dict):
            value = value.get(name)
        elif value is None:
            raise GoTemplateError(f"nil pointer evaluating .{name}")
        else:
            raise GoTemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
    return value


def parse(source: str) -> list[Any]:
    """Parse a template; raises GoTemplateError when it is not in the supported subset."""
    return _Parser(_lex(source)).parse()


def render(source: str, data: Any) -> str:
    """Render a Go template over `data` (dicts as maps, `Struct`s as structs, lists as slices)."""
    executor = _Executor(data)
    try:
        executor.walk(parse(source), data)
    except RecursionError:
        raise GoTemplateError("template nests too deeply") from None
    return "".join(executor.out)


# ---------------------------------------------------------------------------------------------
# what Ollama passes to a model's template


def ollama_messages(
    messages: Sequence[Mapping[str, str]], model_system: str | None = None
) -> list[dict[str, str]]:
    """The messages Ollama's /api/chat renders: the model's SYSTEM first unless the request starts
    with a system message (server/routes.go)."""
    msgs = [dict(m) for m in messages]
    if model_system and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": model_system})
    return msgs


def ollama_data(
    messages: Sequence[Mapping[str, str]], model_system: str | None = None
) -> dict[str, Any]:
    """The data Ollama gives a template that uses .Messages (template/template.go: collate merges
    consecutive messages of one role with a blank line, and .System joins every system message)."""
    system: list[str] = []
    collated: list[Struct] = []
    for m in ollama_messages(messages, model_system):
        if m["role"] == "system":
            system.append(m["content"])
        if collated and collated[-1]["Role"] == m["role"] and m["role"] != "tool":
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append(Struct(Role=m["role"], Content=m["content"]))
    return {
        "System": "\n\n".join(system),
        "Messages": collated,
        "Tools": None,
        "Response": "",
        "Think": False,
        "IsThinkSet": False,
    }


def render_chat(
    template: str, messages: Sequence[Mapping[str, str]], model_system: str | None = None
) -> str:
    """What Ollama sends to the model for a chat request with these messages."""
    return render(template, ollama_data(messages, model_system))


__all__ = [
    "GoTemplateError",
    "Struct",
    "ollama_data",
    "ollama_messages",
    "parse",
    "render",
    "render_chat",
    "truth",
]
