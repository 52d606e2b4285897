"""Write a P3AK tool plugin in pure Python: one decorated function per action.

    #!/usr/bin/env python3
    from p3ak.plugin import Plugin

    plugin = Plugin(software="wordcount.py 0.2")

    @plugin.action(tier="observe")
    def count(text: str) -> dict:
        \"\"\"Count the words, lines and characters of a text.\"\"\"
        return {"words": len(text.split())}

    if __name__ == "__main__":
        plugin.run()

Each action's JSON Schema is derived from its type hints (`str`, `int`, `float`, `bool`,
`list[T]`, `dict`, `Optional[T]`, `Literal[...]`; a parameter with a default is optional) and
its description from the docstring's first paragraph. `run()` speaks the protocol of
`docs/protocol.md` over the socket the kernel hands over on standard input: `hello`,
`register`, then `invoke`, `ping` and `shutdown`. Arguments are checked against the schema
before the function sees them; raise `Invalid` (or `PluginError(kind, message)`) to refuse.

Standard library only: this module does not load P3AK's native extension.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import struct
import sys
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, overload

__all__ = ["Action", "Invalid", "Plugin", "PluginError", "ProtocolError", "schema_for"]

F = TypeVar("F", bound=Callable[..., Any])

VERSIONS = [1]
"""Protocol versions this helper speaks."""
DEFAULT_MAX_FRAME = 1 << 20
TIERS = ("observe", "act", "commit")
ERROR_KINDS = ("transient", "permanent", "rate_limited", "auth", "invalid")


class PluginError(Exception):
    """Refuses an invocation with an error of `kind` (`transient`, `permanent`,
    `rate_limited`, `auth`, `invalid`). The message may reach the model: one line, no
    secrets."""

    def __init__(self, kind: str, message: str, retry_after_ms: Optional[int] = None):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r} (one of {', '.join(ERROR_KINDS)})")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after_ms = retry_after_ms


class Invalid(PluginError):
    """A request this plugin cannot serve (bad arguments, unknown action)."""

    def __init__(self, message: str):
        super().__init__("invalid", message)


class ProtocolError(Exception):
    """The other side broke the protocol (a bad frame, an unexpected message)."""


# --- JSON Schema from type hints ---------------------------------------------------------

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _type_schema(hint: Any, where: str) -> dict[str, Any]:
    """The JSON Schema of one type hint."""
    if hint is Any:
        return {}
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    if hint is type(None):
        return {"type": "null"}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint in (list, tuple) or origin in (list, tuple, typing.get_origin(typing.Sequence[int])):
        schema: dict[str, Any] = {"type": "array"}
        if args and args[0] is not Ellipsis:
            schema["items"] = _type_schema(args[0], where)
        return schema
    if hint is dict or origin is dict:
        schema = {"type": "object"}
        if len(args) == 2:
            if args[0] is not str:
                raise TypeError(f"{where}: JSON object keys are strings, not {args[0]!r}")
            schema["additionalProperties"] = _type_schema(args[1], where)
        return schema
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin is typing.Union or (sys.version_info >= (3, 10) and _is_union_type(hint)):
        return {"anyOf": [_type_schema(a, where) for a in args]}
    raise TypeError(f"{where}: no JSON Schema for type hint {hint!r}")


def _is_union_type(hint: Any) -> bool:
    import types

    return isinstance(hint, getattr(types, "UnionType", ()))


def schema_for(function: Callable[..., Any]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a function's keyword arguments, from its type
    hints: an object with a property per parameter, those without a default required, no
    others allowed. `Optional[T]` (or `T | None`) admits `null`."""
    name = getattr(function, "__name__", repr(function))
    hints = typing.get_type_hints(function)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{name}: *args and **kwargs have no schema; name each argument")
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise TypeError(f"{name}: `{parameter.name}` is positional-only; arguments come "
                            "by name")
        if parameter.name not in hints:
            raise TypeError(f"{name}: `{parameter.name}` needs a type hint for its schema")
        properties[parameter.name] = _type_schema(hints[parameter.name],
                                                  f"{name}({parameter.name})")
        if parameter.default is parameter.empty:
            required.append(parameter.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


def _matches(value: Any, schema: dict[str, Any]) -> bool:
    """Whether `value` fits a schema made by `schema_for` (the subset it produces)."""
    if "anyOf" in schema:
        return any(_matches(value, s) for s in schema["anyOf"])
    if "enum" in schema:
        return any(value == e and type(value) is type(e) for e in schema["enum"])
    kind = schema.get("type")
    if kind is None:
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "array":
        items = schema.get("items")
        return isinstance(value, list) and (items is None or all(_matches(v, items) for v in value))
    if kind == "object":
        if not isinstance(value, dict):
            return False
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                if not _matches(item, props[key]):
                    return False
            elif extra is False:
                return False
            elif isinstance(extra, dict) and not _matches(item, extra):
                return False
        return all(k in value for k in schema.get("required", []))
    return False


def _check_args(args: Any, schema: dict[str, Any]) -> None:
    """Raises `Invalid` saying what is wrong with `args`."""
    if not isinstance(args, dict):
        raise Invalid("arguments must be a JSON object")
    props = schema.get("properties", {})
    unknown = sorted(set(args) - set(props))
    if unknown:
        raise Invalid(f"unknown argument {unknown[0]!r}")
    missing = [k for k in schema.get("required", []) if k not in args]
    if missing:
        raise Invalid(f"missing argument {missing[0]!r}")
    for key, value in args.items():
        if not _matches(value, props[key]):
            raise Invalid(f"argument {key!r} does not match its schema {json.dumps(props[key])}")


# --- Actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One registered action."""

    name: str
    function: Callable[..., Any]
    description: str
    parameters: dict[str, Any]
    tier: str

    def declaration(self) -> dict[str, Any]:
        """The action as `register` declares it."""
        return {"name": self.name, "description": self.description,
                "parameters": self.parameters, "tier": self.tier}


def _description(function: Callable[..., Any]) -> str:
    doc = inspect.getdoc(function) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _check_name(name: str) -> None:
    allowed = all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
    if not name or not allowed or "__" in name:
        raise ValueError(f"action name {name!r}: letters, digits, `_` and `-`, no `__`")


# --- Frames -------------------------------------------------------------------------------


def _read_exact(sock: socket.socket, n: int) -> Optional[bytes]:
    """Exactly n bytes; None when the stream ends before any."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            if data:
                raise ProtocolError("connection closed mid-frame")
            return None
        data += chunk
    return data


def receive(sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME) -> Optional[dict[str, Any]]:
    """The next message, or None at the end of the stream (between frames)."""
    header = _read_exact(sock, 4)
    if header is None:
        return None
    (size,) = struct.unpack(">I", header)
    if size == 0 or size > max_frame:
        raise ProtocolError(f"bad frame length {size} (limit {max_frame})")
    payload = _read_exact(sock, size)
    if payload is None:
        raise ProtocolError("connection closed mid-frame")
    message = json.loads(payload.decode("utf-8"), object_pairs_hook=_no_duplicates)
    if not isinstance(message, dict):
        raise ProtocolError("a message is a JSON object")
    return message


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The protocol refuses repeated member names, so that two readers never disagree.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ProtocolError(f"duplicate key {key!r}")
        out[key] = value
    return out


def send(sock: socket.socket, msg_id: int, msg_type: str, *, version: int = VERSIONS[0],
         max_frame: int = DEFAULT_MAX_FRAME, **fields: Any) -> None:
    """Sends one message; a reply repeats the `id` of the request it answers."""
    message = {"v": version, "id": msg_id, "type": msg_type, **fields}
    payload = json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(payload) > max_frame:
        raise ProtocolError(f"message of {len(payload)} bytes is over the frame limit")
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def kernel_connection() -> socket.socket:
    """The socket on standard input, where the kernel hands it over; /dev/null takes its
    place so that programs the plugin starts do not inherit the kernel's connection."""
    sock = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return sock


# --- The plugin ---------------------------------------------------------------------------


class Plugin:
    """A tool plugin: register actions with `@plugin.action(...)`, then `plugin.run()`."""

    def __init__(self, software: Optional[str] = None, *, name: Optional[str] = None):
        """`software` is free text for the kernel's log (`"wordcount.py 0.2"`); `name` is
        the plugin's configured name, by default `P3AK_PLUGIN_NAME` as the kernel sets it."""
        self.software = software
        self.name = name
        self.actions: dict[str, Action] = {}
        self.config: Any = None
        """The plugin's `config` table from config.toml, once `welcome` has arrived."""
        self.version = VERSIONS[0]
        self.agent: Optional[str] = None
        """The agent on whose behalf the current invocation runs."""

    def __repr__(self) -> str:
        return f"<p3ak.plugin.Plugin {self.name or os.environ.get('P3AK_PLUGIN_NAME')!r} " \
               f"actions={list(self.actions)}>"

    @overload
    def action(self, name: F) -> F: ...

    @overload
    def action(self, name: Optional[str] = None, *, tier: str = "observe",
               description: Optional[str] = None) -> Callable[[F], F]: ...

    def action(self, name: Any = None, *, tier: str = "observe",
               description: Optional[str] = None) -> Any:
        """Registers the decorated function as an action (named after it unless `name`).
        `tier` is only a recommendation: the operator's policy decides."""
        if callable(name):  # used bare: @plugin.action
            return self.action(tier=tier, description=description)(name)
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r} (observe, act, commit)")

        def register(function: F) -> F:
            action_name = name or function.__name__
            _check_name(action_name)
            if action_name in self.actions:
                raise ValueError(f"action {action_name!r} is registered twice")
            text = description if description is not None else _description(function)
            if len(text.encode("utf-8")) > 4096:
                raise ValueError(f"action {action_name!r}: description over 4096 bytes")
            self.actions[action_name] = Action(action_name, function, text,
                                               schema_for(function), tier)
            return function

        return register

    def invoke(self, action: Any, args: Any, agent: Optional[str] = None) -> Any:
        """Runs one action as an `invoke` would; raises `PluginError` to refuse it."""
        if not isinstance(action, str) or action not in self.actions:
            raise Invalid(f"unknown action {action!r}")
        chosen = self.actions[action]
        _check_args(args, chosen.parameters)
        self.agent = agent
        try:
            return chosen.function(**args)
        finally:
            self.agent = None

    def run(self, sock: Optional[socket.socket] = None) -> None:
        """Speaks the protocol until `shutdown` or the end of the stream. Without `sock`,
        takes the kernel's connection from standard input. Exits with a message on standard
        error (the kernel's log) when the handshake fails."""
        try:
            self.serve(sock if sock is not None else kernel_connection())
        except ProtocolError as error:
            sys.exit(f"{self._label()}: {error}")

    def _label(self) -> str:
        return self.software or self.name or "plugin"

    def serve(self, sock: socket.socket) -> None:
        """`run` on a given socket, raising `ProtocolError` instead of exiting."""
        max_frame = int(os.environ.get("P3AK_MAX_FRAME", str(DEFAULT_MAX_FRAME)))
        name = self.name or os.environ.get("P3AK_PLUGIN_NAME")
        if not name:
            raise ProtocolError("no plugin name: P3AK_PLUGIN_NAME is not set")
        try:
            self._handshake(sock, name, max_frame)
            self._operate(sock, max_frame)
        finally:
            sock.close()

    def _handshake(self, sock: socket.socket, name: str, max_frame: int) -> None:
        # Our own requests take fresh ids; only one is open during the handshake.
        fields: dict[str, Any] = {"plugin": name, "versions": VERSIONS}
        if self.software:
            fields["software"] = self.software
        send(sock, 1, "hello", max_frame=max_frame, **fields)
        welcome = receive(sock, max_frame)
        if welcome is None or welcome.get("type") != "welcome":
            raise ProtocolError(f"expected welcome, got {welcome!r}")  # e.g. no common version
        self.version = welcome.get("version", VERSIONS[0])
        self.config = welcome.get("config")
        send(sock, 2, "register", version=self.version, max_frame=max_frame, kind="tool",
             actions=[a.declaration() for a in self.actions.values()])
        registered = receive(sock, max_frame)
        if registered is None or registered.get("type") != "registered":
            raise ProtocolError(f"registration refused: {registered!r}")

    def _operate(self, sock: socket.socket, max_frame: int) -> None:
        def reply(msg_id: Any, msg_type: str, **fields: Any) -> None:
            send(sock, msg_id, msg_type, version=self.version, max_frame=max_frame, **fields)

        while True:
            message = receive(sock, max_frame)
            if message is None or message.get("type") == "shutdown":
                return
            msg_type, msg_id = message.get("type"), message.get("id")
            if msg_type == "ping":
                reply(msg_id, "pong")
            elif msg_type == "invoke":
                self._answer_invoke(message, reply)
            elif msg_type in ("pong", "result", "error", "stream_chunk"):
                pass  # replies: this helper sends no requests after registering
            else:
                reply(msg_id, "error", kind="invalid", message=f"unexpected {msg_type!r}")

    def _answer_invoke(self, message: dict[str, Any], reply: Callable[..., None]) -> None:
        msg_id = message.get("id")
        try:
            output = self.invoke(message.get("action"), message.get("args"), message.get("agent"))
        except PluginError as error:
            fields: dict[str, Any] = {"kind": error.kind, "message": _one_line(error.message)}
            if error.retry_after_ms is not None:
                fields["retry_after_ms"] = error.retry_after_ms
            reply(msg_id, "error", **fields)
            return
        except Exception as error:  # noqa: BLE001 - one failing call must not end the plugin
            print(f"{self._label()}: {message.get('action')!r} failed: {error!r}",
                  file=sys.stderr)
            reply(msg_id, "error", kind="permanent",
                  message=f"{type(error).__name__}: {_one_line(str(error))}")
            return
        try:
            reply(msg_id, "result", output=output)
        except (TypeError, ValueError, ProtocolError) as error:
            # Not JSON, or over the frame limit: nothing was sent, so an error can be.
            reply(msg_id, "error", kind="permanent",
                  message=f"the output cannot be sent: {_one_line(str(error))}")


def _one_line(text: str) -> str:
    return " ".join(text.split())
