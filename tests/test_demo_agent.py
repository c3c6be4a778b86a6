"""The bundled stand-in agent (``python -m aegis_mcp.demo``), driven as a real process.

Every test starts the demo as a subprocess, the way the supervisor does, and checks what
a user or the supervisor can observe: exit codes, output lines, the conversation log, the
start-up report, processes. The MCP tests talk to a real MCP server over stdio.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import queue
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "runner"
# Upper bound for anything to happen (a deadline for hangs, not a timing assertion).
DEADLINE = 60.0

MCP_SERVER = '''
import json, os
from mcp.server.mcpserver import MCPServer

if os.environ.get("DEMO_TEST_SERVER_INFO"):
    with open(os.environ["DEMO_TEST_SERVER_INFO"], "w") as fh:
        json.dump({"pid": os.getpid(), "env": dict(os.environ)}, fh)

server = MCPServer("calc")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    server.run()
'''


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The demo's environment: this source tree importable, a private demo home."""
    result = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AEGIS_DEMO_SCENARIO", "AEGIS_DEMO_REPORT", "MCP_TIMEOUT")
    }
    # Works whether or not the package is installed: the source tree comes first.
    result["PYTHONPATH"] = os.pathsep.join(
        [str(RUNNER), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    result["AEGIS_DEMO_HOME"] = str(tmp_path / "demo-home")
    return result


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def demo_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "aegis_mcp.demo", *args]


def run_demo(
    args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        demo_cmd(*args),
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


def mcp_config(tmp_path: Path, **servers: dict) -> str:
    """Inline ``--mcp-config`` JSON; ``calc`` servers get the test server's script."""
    script = tmp_path / "calc_server.py"
    script.write_text(MCP_SERVER)
    spec = {
        name: {"command": sys.executable, "args": [str(script)], **extra}
        for name, extra in servers.items()
    }
    return json.dumps({"mcpServers": spec})


def needs_mcp() -> None:
    pytest.importorskip("mcp.server.mcpserver", reason="the mcp 2.x SDK is not installed")


class Live:
    """A running interactive demo whose stdout is read line by line in the background."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            demo_cmd(*args),
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, text: str) -> str:
        """Wait for a stdout line containing ``text``."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"never saw {text!r}; output so far: {self.seen!r}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self) -> int:
        return self.proc.wait(timeout=DEADLINE)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def live(env: dict[str, str], workdir: Path) -> Iterator:
    started: list[Live] = []

    def start(*args: str) -> Live:
        proc = Live(list(args), env, workdir)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


def read_report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- command line ---------------------------------------------------------------------


def test_variadic_mcp_config_stops_at_the_next_option(
    env: dict[str, str], workdir: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.jsonl"
    env["AEGIS_DEMO_REPORT"] = str(report)
    first = workdir / "first.json"
    first.write_text(json.dumps({"mcpServers": {"one": {"command": "/nonexistent/one"}}}))
    inline = json.dumps({"mcpServers": {"two": {"command": "/nonexistent/two"}}})
    result = run_demo(
        ["--mcp-config", "first.json", inline, "-p", "--model", "m1", "hello there"], env, workdir
    )
    assert result.returncode == 0, result.stderr
    assert "demo: you said: hello there" in result.stdout.splitlines()
    (entry,) = read_report(report)
    assert entry["mcp_servers"] == ["one", "two"]
    assert entry["prompt"] == "hello there"
    assert entry["headless"] is True
    assert entry["model"] == "m1"


def test_prompt_right_after_mcp_config_is_taken_as_a_config(
    env: dict[str, str], workdir: Path
) -> None:
    # Claude Code fails the same way; the supervisor must not place a prompt there.
    inline = json.dumps({"mcpServers": {}})
    result = run_demo(["-p", "--mcp-config", inline, "hello"], env, workdir)
    assert result.returncode == 1
    assert "Invalid MCP configuration" in result.stderr
    assert "hello" in result.stderr


def test_claude_flags_are_accepted_and_unknown_ones_warned_about(
    env: dict[str, str], workdir: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.jsonl"
    env["AEGIS_DEMO_REPORT"] = str(report)
    args = [
        "--dangerously-skip-permissions",
        "--permission-mode",
        "acceptEdits",
        "--input-format",
        "text",
        "--max-turns",
        "3",
        "--frobnicate",
        "--verbose",
        "-p",
        "the prompt",
    ]
    result = run_demo(args, env, workdir)
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["demo: you said: the prompt"]
    warnings = [line for line in result.stderr.splitlines() if "--frobnicate" in line]
    assert len(warnings) == 1
    (entry,) = read_report(report)
    assert entry["skip_permissions"] is True
    assert entry["prompt"] == "the prompt"
    assert entry["argv"] == args


def test_missing_option_value_is_an_error(env: dict[str, str], workdir: Path) -> None:
    result = run_demo(["-p", "hi", "--model"], env, workdir)
    assert result.returncode == 1
    assert "--model" in result.stderr


# -- headless -------------------------------------------------------------------------


def test_headless_stream_json(env: dict[str, str], workdir: Path) -> None:
    result = run_demo(["-p", "hi", "--output-format", "stream-json", "--verbose"], env, workdir)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert (events[0]["type"], events[0]["subtype"]) == ("system", "init")
    assert events[0]["mcp_servers"] == []
    session = events[0]["session_id"]
    texts = [
        block["text"]
        for event in events
        if event["type"] == "assistant"
        for block in event["message"]["content"]
    ]
    assert texts == ["demo: you said: hi"]
    final = events[-1]
    assert final["type"] == "result"
    assert final["subtype"] == "success"
    assert final["is_error"] is False
    assert final["result"] == "demo: you said: hi"
    assert final["num_turns"] == 1
    assert final["session_id"] == session


def test_headless_json_prints_only_the_result(env: dict[str, str], workdir: Path) -> None:
    result = run_demo(["--print", "--output-format=json", "hi"], env, workdir)
    assert result.returncode == 0
    (line,) = result.stdout.splitlines()
    obj = json.loads(line)
    assert obj["type"] == "result"
    assert obj["result"] == "demo: you said: hi"


def test_headless_reads_the_prompt_from_stdin(env: dict[str, str], workdir: Path) -> None:
    result = run_demo(["-p"], env, workdir, stdin="from stdin\n")
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["demo: you said: from stdin"]
    empty = run_demo(["-p"], env, workdir, stdin="")
    assert empty.returncode == 1
    assert "Input must be provided" in empty.stderr


def test_max_turns_limits_tool_steps(env: dict[str, str], workdir: Path) -> None:
    spec = "/scenario tool:a;tool:b;say:never"
    args = ["-p", spec, "--max-turns", "1", "--output-format", "stream-json"]
    result = run_demo(args, env, workdir)
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stdout.splitlines()]
    tool_uses = [
        block["name"]
        for event in events
        if event["type"] == "assistant"
        for block in event["message"]["content"]
        if block["type"] == "tool_use"
    ]
    assert tool_uses == ["a"]
    assert events[-1]["subtype"] == "error_max_turns"
    assert events[-1]["is_error"] is True
    assert "never" not in events[-1]["result"]


# -- conversation ---------------------------------------------------------------------


def test_continue_loads_the_previous_conversation(env: dict[str, str], workdir: Path) -> None:
    assert run_demo(["-p", "first"], env, workdir).returncode == 0
    second = run_demo(["--continue", "-p", "second"], env, workdir)
    assert second.returncode == 0
    assert "continuing conversation (2 turns)" in second.stderr
    third = run_demo(["-c"], env, workdir, stdin="third\n")
    assert third.returncode == 0
    assert "continuing conversation (4 turns)" in third.stdout
    assert "demo: you said: third" in third.stdout
    logs = list(Path(env["AEGIS_DEMO_HOME"], "conversations").glob("*.jsonl"))
    assert len(logs) == 1
    turns = [json.loads(line) for line in logs[0].read_text().splitlines()]
    assert [t["text"] for t in turns if t["role"] == "user"] == ["first", "second", "third"]
    assert len(turns) == 6


def test_without_continue_the_conversation_starts_afresh(
    env: dict[str, str], workdir: Path, tmp_path: Path
) -> None:
    run_demo(["-p", "one"], env, workdir)
    run_demo(["-p", "two"], env, workdir)
    other = tmp_path / "elsewhere"
    other.mkdir()
    # Another directory has its own conversation.
    run_demo(["-p", "three"], env, other)
    resumed = run_demo(["--resume", "some-id", "-p", "again"], env, workdir)
    assert "continuing conversation (2 turns)" in resumed.stderr


# -- scenarios ------------------------------------------------------------------------


def test_scenario_exit_codes(env: dict[str, str], workdir: Path) -> None:
    result = run_demo(["--scenario", "say:hello;exit:3;say:never"], env, workdir)
    assert result.returncode == 3
    assert "hello" in result.stdout.splitlines()
    assert "never" not in result.stdout
    headless = run_demo(["-p", "/scenario say:hi;exit:5"], env, workdir)
    assert headless.returncode == 5
    assert headless.stdout.splitlines() == ["hi"]
    env["AEGIS_DEMO_SCENARIO"] = "exit:7"
    assert run_demo([], env, workdir).returncode == 7


def test_scenario_crash_dies_by_sigsegv(env: dict[str, str], workdir: Path) -> None:
    result = run_demo(["--scenario", "crash"], env, workdir)
    assert result.returncode == -signal.SIGSEGV


def test_invalid_scenario_exits_2(env: dict[str, str], workdir: Path) -> None:
    for args in (["--scenario", "say:ok;bogus"], ["-p", "/scenario sleep:soon"]):
        result = run_demo(args, env, workdir)
        assert result.returncode == 2
        assert "invalid scenario" in result.stderr
        assert "ok" not in result.stdout
    # At the interactive prompt a typo is reported and the session goes on.
    result = run_demo([], env, workdir, stdin="/scenario exit:999\nstill here\n")
    assert result.returncode == 0
    assert "invalid scenario" in result.stderr
    assert "demo: you said: still here" in result.stdout


def test_scenario_steps_that_print(env: dict[str, str], workdir: Path) -> None:
    env["DEMO_TEST_VALUE"] = "v1"
    spec = (
        r"say:a:b;print-env:DEMO_TEST_VALUE;print-env:DEMO_TEST_UNSET;write:out.txt:x\;y;"
        "repeat:2:say:r|sleep:0;spin:0.01;grow:2:1"
    )
    result = run_demo(["-p", "/scenario " + spec], env, workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "a:b",
        "DEMO_TEST_VALUE=v1",
        "DEMO_TEST_UNSET is unset",
        "wrote out.txt (3 bytes)",
        "r",
        "r",
        "grow: holding 2 MB",
    ]
    assert (workdir / "out.txt").read_text() == "x;y"


def test_connect_step(env: dict[str, str], workdir: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received: list[int] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            total = 0
            while data := conn.recv(65536):
                total += len(data)
            received.append(total)
            conn.sendall(b"pong")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with server:
        result = run_demo(["-p", f"/scenario connect:127.0.0.1:{port}:5000"], env, workdir)
        thread.join(DEADLINE)
    assert result.stdout.splitlines() == [f"connect 127.0.0.1:{port} ok sent=5000 recv=4"]
    assert received == [5000]
    refused = run_demo(["-p", f"/scenario connect:127.0.0.1:{port}"], env, workdir)
    assert refused.returncode == 0
    assert f"connect 127.0.0.1:{port} error:" in refused.stdout


def test_grow_spawn_child_and_stop_self(live, tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    demo = live("--scenario", "grow:64:16;spawn-child:60;stop-self;say:resumed;quiet")
    demo.expect("grow: holding 64 MB")
    child_pid = int(demo.expect("spawned child").split()[-1])
    demo.expect("stopping self")
    proc = psutil.Process(demo.proc.pid)
    deadline = time.monotonic() + DEADLINE
    while proc.status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.status() == psutil.STATUS_STOPPED
    assert proc.memory_info().rss >= 64 * 1024 * 1024
    assert child_pid in [c.pid for c in proc.children()]
    os.kill(demo.proc.pid, signal.SIGCONT)
    demo.expect("resumed")
    psutil.Process(child_pid).kill()


# -- signals --------------------------------------------------------------------------


def test_sigint_twice_exits_130(live) -> None:
    demo = live("--scenario", "say:ready;quiet")
    demo.expect("ready")
    demo.proc.send_signal(signal.SIGINT)
    demo.expect("interrupted")
    # One Ctrl-C only interrupted the step: the agent still answers.
    demo.send("still there?")
    demo.expect("demo: you said: still there?")
    # Signals sent back to back can merge into one; send until the pair lands.
    code = None
    while code is None:
        demo.proc.send_signal(signal.SIGINT)
        try:
            code = demo.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            continue
    assert code == 130


def test_sigterm_exits_143(live) -> None:
    demo = live("--scenario", "say:ready;spin")
    demo.expect("ready")
    demo.proc.send_signal(signal.SIGTERM)
    assert demo.wait() == 143


def test_ignore_sigterm_step(live) -> None:
    demo = live("--scenario", "ignore-sigterm;say:ready")
    demo.expect("ready")
    # An ignored signal is discarded when sent, so the answer below comes after it.
    demo.proc.send_signal(signal.SIGTERM)
    demo.send("alive?")
    demo.expect("demo: you said: alive?")
    demo.send("/exit 0")
    assert demo.wait() == 0


# -- start-up report ------------------------------------------------------------------


def test_report_file(env: dict[str, str], workdir: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.jsonl"
    env["AEGIS_DEMO_REPORT"] = str(report)
    env["AEGIS_MCP_AGENT_ID"] = "agent-7"
    env["LD_PRELOAD"] = ""
    first = run_demo(["hello"], env, workdir, stdin="")
    assert first.returncode == 0
    banner_pid = int(first.stdout.splitlines()[0].split("pid ")[1].rstrip(")"))
    run_demo(["-c", "-p", "again", "--output-format", "json"], env, workdir)
    one, two = read_report(report)
    assert one["pid"] == banner_pid
    assert one["ppid"] == os.getpid()
    assert one["argv"] == ["hello"]
    assert one["prompt"] == "hello"
    assert one["headless"] is False
    assert one["continue"] is False
    assert one["cwd"] == str(workdir)
    assert (one["uid"], one["euid"], one["gid"]) == (os.getuid(), os.geteuid(), os.getgid())
    assert one["pgid"] == os.getpgid(0)  # no new process group of its own
    assert one["isatty"] == {"stdin": False, "stdout": False, "stderr": False}
    assert one["term_size"] is None
    assert one["env"]["AEGIS_MCP_AGENT_ID"] == "agent-7"
    assert one["env"]["AEGIS_DEMO_HOME"] == env["AEGIS_DEMO_HOME"]
    assert "LD_PRELOAD" in one["env"]
    assert "PATH" not in one["env"]
    assert one["netns"].startswith("net:[")
    assert isinstance(one["cap_eff"], str) and int(one["cap_eff"], 16) >= 0
    assert one["no_new_privs"] in (0, 1)
    assert (two["continue"], two["headless"], two["output_format"]) == (True, True, "json")


def test_report_under_a_pty(env: dict[str, str], workdir: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.jsonl"
    env["AEGIS_DEMO_REPORT"] = str(report)
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    proc = subprocess.Popen(
        demo_cmd("--scenario", "exit:0"),
        env=env,
        cwd=workdir,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=DEADLINE) == 0
    os.close(primary)
    assert b"aegis demo agent" in output
    (entry,) = read_report(report)
    assert entry["isatty"] == {"stdin": True, "stdout": True, "stderr": True}
    assert entry["term_size"] == [111, 33]
    assert entry["sid"] == entry["pid"]


def test_unwritable_report_only_warns(env: dict[str, str], workdir: Path, tmp_path: Path) -> None:
    env["AEGIS_DEMO_REPORT"] = str(tmp_path / "missing-dir" / "report.jsonl")
    result = run_demo(["-p", "hi"], env, workdir)
    assert result.returncode == 0
    assert "cannot write start-up report" in result.stderr


# -- MCP ------------------------------------------------------------------------------


def test_mcp_tool_call_through_a_real_server(
    env: dict[str, str], workdir: Path, tmp_path: Path
) -> None:
    needs_mcp()
    info = tmp_path / "server-info.json"
    env["AEGIS_MCP_SOCKET"] = "/nonexistent/test.sock"
    config = mcp_config(tmp_path, calc={"env": {"DEMO_TEST_SERVER_INFO": str(info)}})
    spec = 'tool:add:{"a":2,"b":3};tool:calc.add:{"a":40,"b":2};tool:mcp__calc__add:{"a":1}'
    result = run_demo(["--mcp-config", config, "--scenario", spec, "-p", "go"], env, workdir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "mcp: calc connected (1 tools)" in lines
    assert "tool add -> 5" in lines
    assert "tool calc.add -> 42" in lines
    assert any(line.startswith("tool mcp__calc__add error:") for line in lines)
    server = json.loads(info.read_text())
    # Like Claude, the demo hands its environment (the supervisor's socket) to servers.
    assert server["env"]["AEGIS_MCP_SOCKET"] == "/nonexistent/test.sock"


def test_mcp_interactive_commands_and_stream_events(
    env: dict[str, str], workdir: Path, tmp_path: Path
) -> None:
    needs_mcp()
    config = mcp_config(tmp_path, calc={})
    stdin = '/tools\n/tool add {"a": 20, "b": 22}\n/tool nosuch {}\n/exit 4\n'
    result = run_demo(["--mcp-config", config], env, workdir, stdin=stdin)
    assert result.returncode == 4, result.stderr
    assert "calc.add — Add two integers." in result.stdout
    assert "> 42" in result.stdout.splitlines()
    assert "tool nosuch error: no MCP tool named 'nosuch'" in result.stdout
    streamed = run_demo(
        ["-p", '/tool add {"a":1,"b":2}', "--output-format", "stream-json", "--mcp-config", config],
        env,
        workdir,
    )
    events = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert events[0]["mcp_servers"] == [{"name": "calc", "status": "connected"}]
    assert events[0]["tools"] == ["mcp__calc__add"]
    uses = [e for e in events if e["type"] == "assistant"]
    assert uses[0]["message"]["content"][0]["name"] == "mcp__calc__add"
    results = [e for e in events if e["type"] == "user"]
    assert results[0]["message"]["content"][0]["content"] == "3"
    assert events[-1]["result"] == "3"


def test_broken_mcp_server_does_not_stop_the_demo(
    env: dict[str, str], workdir: Path, tmp_path: Path
) -> None:
    needs_mcp()
    config = mcp_config(
        tmp_path,
        calc={},
        broken={"command": str(tmp_path / "no-such-server")},
        quits={"command": sys.executable, "args": ["-c", "pass"]},
    )
    spec = 'tool:broken.add:{};tool:add:{"a":1,"b":1}'
    result = run_demo(["--mcp-config", config, "--scenario", spec, "-p", "hi"], env, workdir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("mcp: broken failed:") for line in lines)
    assert any(line.startswith("mcp: quits failed:") for line in lines)
    assert any(line.startswith("tool broken.add error:") for line in lines)
    assert "tool add -> 2" in lines


def test_project_mcp_json_is_merged(env: dict[str, str], workdir: Path, tmp_path: Path) -> None:
    needs_mcp()
    report = tmp_path / "report.jsonl"
    env["AEGIS_DEMO_REPORT"] = str(report)
    # The project's "calc" is broken; the --mcp-config one of the same name wins.
    project = {
        "mcpServers": {
            "calc": {"command": str(tmp_path / "broken")},
            "extra": {"command": str(tmp_path / "also-broken")},
        }
    }
    (workdir / ".mcp.json").write_text(json.dumps(project))
    config = mcp_config(tmp_path, calc={})
    spec = 'tool:calc.add:{"a":3,"b":4}'
    result = run_demo(["--mcp-config", config, "--scenario", spec, "-p", "x"], env, workdir)
    assert "tool calc.add -> 7" in result.stdout.splitlines()
    assert read_report(report)[0]["mcp_servers"] == ["calc", "extra"]
    strict = run_demo(["--strict-mcp-config", "-p", "x"], env, workdir)
    assert read_report(report)[1]["mcp_servers"] == []
    assert strict.returncode == 0


def test_sigterm_closes_mcp_servers(live, tmp_path: Path) -> None:
    needs_mcp()
    info = tmp_path / "server-info.json"
    config = mcp_config(tmp_path, calc={"env": {"DEMO_TEST_SERVER_INFO": str(info)}})
    demo = live("--mcp-config", config, "--scenario", "say:ready")
    demo.expect("mcp: calc connected")
    server_pid = json.loads(info.read_text())["pid"]
    demo.proc.send_signal(signal.SIGTERM)
    assert demo.wait() == 143
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"MCP server {server_pid} outlived the demo")
