"""p3ak.plugin: schemas from type hints, and whole protocol sessions over a socket pair."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from p3ak import plugin as sdk
from p3ak.plugin import Invalid, Plugin, PluginError, ProtocolError, schema_for

REPO = Path(__file__).resolve().parents[3]
WORDCOUNT_SDK = REPO / "examples" / "plugins" / "wordcount_sdk.py"


def test_plugin_helper_does_not_load_the_native_extension():
    code = "import sys, p3ak.plugin; assert 'p3ak._native' not in sys.modules, sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_schema_from_hints():
    def act(name: str, count: int, ratio: float, loud: bool, tags: list[str],
            extra: dict[str, int], mode: Literal["a", "b"] = "a",
            note: Optional[str] = None) -> dict:
        return {}

    assert schema_for(act) == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "loud": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
            "mode": {"enum": ["a", "b"]},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["name", "count", "ratio", "loud", "tags", "extra"],
        "additionalProperties": False,
    }


def test_schema_refuses_what_it_cannot_describe():
    def untyped(text):  # no hint
        return text

    def star(*args: str):
        return args

    with pytest.raises(TypeError, match="needs a type hint"):
        schema_for(untyped)
    with pytest.raises(TypeError, match=r"\*args"):
        schema_for(star)


def test_action_registration_rules():
    plugin = Plugin()

    @plugin.action
    def bare(text: str) -> str:
        """First paragraph,
        on two lines.

        Not this one."""
        return text

    assert plugin.actions["bare"].tier == "observe"
    assert plugin.actions["bare"].description == "First paragraph, on two lines."
    with pytest.raises(ValueError, match="no `__`"):
        plugin.action("a__b")(bare)
    with pytest.raises(ValueError, match="registered twice"):
        plugin.action("bare")(bare)
    with pytest.raises(ValueError, match="unknown tier"):
        plugin.action(tier="root")
    with pytest.raises(ValueError, match="unknown error kind"):
        PluginError("fatal", "x")


def test_invoke_checks_arguments_against_the_schema():
    plugin = Plugin()

    @plugin.action(tier="act")
    def add(a: int, b: int = 1) -> int:
        return a + b

    assert plugin.invoke("add", {"a": 2}) == 3
    for args, message in [
        ({"b": 1}, "missing argument 'a'"),
        ({"a": 1, "c": 2}, "unknown argument 'c'"),
        ({"a": "1"}, "argument 'a' does not match"),
        ({"a": True}, "argument 'a' does not match"),  # a bool is not an integer in JSON
        ([1], "arguments must be a JSON object"),
    ]:
        with pytest.raises(Invalid, match=message):
            plugin.invoke("add", args)
    with pytest.raises(Invalid, match="unknown action 'sub'"):
        plugin.invoke("sub", {})


# --- a kernel's side of the protocol, in Python ---------------------------------------------


class FakeKernel:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.settimeout(10)

    def send(self, msg_id: int, msg_type: str, **fields: Any) -> None:
        sdk.send(self.sock, msg_id, msg_type, **fields)

    def receive(self) -> Optional[dict]:
        return sdk.receive(self.sock)

    def request(self, msg_id: int, msg_type: str, **fields: Any) -> dict:
        self.send(msg_id, msg_type, **fields)
        answer = self.receive()
        assert answer is not None and answer["id"] == msg_id, answer
        return answer

    def handshake(self, name: str) -> list[dict]:
        hello = self.receive()
        assert hello["type"] == "hello" and hello["plugin"] == name and hello["versions"] == [1]
        self.send(hello["id"], "welcome", version=1, config={"language": "en"})
        register = self.receive()
        assert register["type"] == "register" and register["kind"] == "tool"
        assert register["id"] != hello["id"]
        self.send(register["id"], "registered")
        return register["actions"]


def serve_in_thread(plugin: Plugin) -> tuple[FakeKernel, threading.Thread, list]:
    ours, theirs = socket.socketpair()
    failures: list = []

    def run() -> None:
        try:
            plugin.serve(theirs)
        except BaseException as error:  # noqa: BLE001 - reported to the test
            failures.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return FakeKernel(ours), thread, failures


def test_protocol_round_trip_over_a_socketpair():
    plugin = Plugin(software="test 1", name="calc")

    @plugin.action(tier="observe")
    def add(a: int, b: int) -> dict:
        """Add two integers."""
        return {"sum": a + b, "agent": plugin.agent}

    @plugin.action(tier="commit")
    def fail(reason: str) -> dict:
        raise PluginError("rate_limited", f"slow down: {reason}", retry_after_ms=250)

    @plugin.action(tier="act")
    def crash() -> dict:
        raise RuntimeError("boom\nsecond line")

    @plugin.action(tier="act")
    def not_json() -> object:
        return object()

    kernel, thread, failures = serve_in_thread(plugin)
    actions = kernel.handshake("calc")
    assert [(a["name"], a["tier"]) for a in actions] == [
        ("add", "observe"), ("fail", "commit"), ("crash", "act"), ("not_json", "act")]
    assert actions[0]["description"] == "Add two integers."
    assert actions[0]["parameters"]["required"] == ["a", "b"]
    assert plugin.config == {"language": "en"}

    answer = kernel.request(10, "invoke", agent="amber", action="add", args={"a": 2, "b": 3},
                            deadline_ms=5000)
    assert answer == {"v": 1, "id": 10, "type": "result", "output": {"sum": 5, "agent": "amber"}}
    answer = kernel.request(11, "invoke", agent="amber", action="add", args={"a": 2})
    assert (answer["type"], answer["kind"]) == ("error", "invalid")
    assert answer["message"] == "missing argument 'b'"
    answer = kernel.request(12, "invoke", agent="amber", action="fail", args={"reason": "x"})
    assert answer["kind"] == "rate_limited" and answer["retry_after_ms"] == 250
    answer = kernel.request(13, "invoke", agent="amber", action="crash", args={})
    assert answer["kind"] == "permanent" and answer["message"] == "RuntimeError: boom second line"
    answer = kernel.request(14, "invoke", agent="amber", action="not_json", args={})
    assert answer["kind"] == "permanent" and "cannot be sent" in answer["message"]
    assert kernel.request(15, "ping")["type"] == "pong"
    answer = kernel.request(16, "outbound", conversation="x", text="y")
    assert answer["kind"] == "invalid"
    kernel.send(17, "shutdown")
    assert kernel.receive() is None, "nothing after shutdown"
    thread.join(10)
    assert not thread.is_alive() and failures == []


def test_a_refused_handshake_is_a_protocol_error():
    plugin = Plugin(name="calc")
    kernel, thread, failures = serve_in_thread(plugin)
    hello = kernel.receive()
    kernel.send(hello["id"], "error", kind="invalid", message="no common protocol version")
    thread.join(10)
    assert len(failures) == 1 and isinstance(failures[0], ProtocolError)
    assert "expected welcome" in str(failures[0])


def test_oversized_and_duplicate_frames_are_refused():
    ours, theirs = socket.socketpair()
    ours.sendall(struct.pack(">I", 1 << 30))
    with pytest.raises(ProtocolError, match="bad frame length"):
        sdk.receive(theirs)
    payload = b'{"v":1,"id":1,"type":"ping","type":"pong"}'
    ours.sendall(struct.pack(">I", len(payload)) + payload)
    with pytest.raises(ProtocolError, match="duplicate key 'type'"):
        sdk.receive(theirs)


def test_the_sdk_example_runs_as_the_kernel_starts_it():
    """examples/plugins/wordcount_sdk.py, started as the kernel does: its connection on
    standard input, an empty environment but for the P3AK_* variables (and the package)."""
    ours, theirs = socket.socketpair()
    package = Path(sdk.__file__).resolve().parents[1]
    env = {"PATH": os.environ.get("PATH", ""), "P3AK_PLUGIN_NAME": "wordcount",
           "P3AK_MAX_FRAME": "4096", "PYTHONPATH": str(package)}
    child = subprocess.Popen([sys.executable, str(WORDCOUNT_SDK)], stdin=theirs, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    theirs.close()
    try:
        kernel = FakeKernel(ours)
        actions = kernel.handshake("wordcount")
        assert [(a["name"], a["tier"]) for a in actions] == [("count", "observe"),
                                                             ("shout", "act")]
        text = "one two\nthree été"
        answer = kernel.request(100, "invoke", agent="amber", action="count",
                                args={"text": text})
        assert answer["output"] == {"words": 4, "lines": 2, "chars": len(text)}
        answer = kernel.request(101, "invoke", agent="amber", action="shout",
                                args={"text": "quiet é"})
        assert answer["output"] == {"text": "QUIET É"}
        answer = kernel.request(102, "invoke", agent="amber", action="count",
                                args={"text": 7})
        assert answer["kind"] == "invalid"
        kernel.send(103, "shutdown")
        assert child.wait(10) == 0, child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
        ours.close()


def test_readme_plugin_example():
    """The README's plugin snippet defines what it says."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("## Writing a plugin", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {"__name__": "readme_plugin"}
    exec(compile(code, "README.md", "exec"), namespace)
    plugin = namespace["plugin"]
    count = plugin.actions["count"]
    assert count.tier == "observe" and count.description == "Count the words of a text."
    assert count.parameters["required"] == ["text"]
    assert plugin.invoke("count", {"text": "a b a", "unique": True}) == {"words": 2}
