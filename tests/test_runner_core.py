"""The runner with real processes: pipes and PTYs, exit codes, signals, restarts, errors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aegis_mcp.control.protocol import ControlError
from helpers import AEGIS, PtyProcess, call, runner_socket, start_aegis, wait_for, wait_reports


def run(argv: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(AEGIS + argv, env=env, capture_output=True, text=True, timeout=60, **kw)


def test_arguments_reach_the_agent_unchanged(aegis_env, report):
    result = run(
        [
            "demo",
            "--no-watchdog",
            "-p",
            "hello there",
            "--model",
            "m1",
            "--netmon=preload",
            "--output-format",
            "text",
            "--",
            "--keep-root",
        ],
        aegis_env,
    )
    assert result.returncode == 0, result.stderr
    argv = wait_reports(report, 1)[0]["argv"]
    assert argv[argv.index("-p") : argv.index("-p") + 6] == [
        "-p",
        "hello there",
        "--model",
        "m1",
        "--output-format",
        "text",
    ]
    assert "--keep-root" in argv
    assert "--no-watchdog" not in argv and "--netmon=preload" not in argv


def test_exit_codes_propagate(aegis_env):
    assert run(["run", "--", "sh", "-c", "exit 7"], aegis_env).returncode == 7
    assert run(["run", "--", "sh", "-c", "kill -TERM $$"], aegis_env).returncode == 128 + 15
    out = run(["run", "--", "sh", "-c", "echo out; echo err >&2"], aegis_env)
    assert (out.returncode, out.stdout, out.stderr.strip().splitlines()[-1]) == (0, "out\n", "err")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nosuchagent"], "unknown agent 'nosuchagent'"),
        (["run", "--", "/nonexistent/agent-binary"], "does not exist"),
        (["demo", "--watchdog-timeout=zero"], "takes seconds"),
        (["demo", "--netmon=carrier-pigeon"], "--netmon must be one of"),
    ],
)
def test_bad_requests_give_one_line_and_exit_2(aegis_env, argv, message):
    result = run(argv, aegis_env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("aegis-mcp: error:")


def test_agent_missing_from_path(aegis_env, tmp_path):
    cfg = Path(aegis_env["AEGIS_MCP_CONFIG"])
    cfg.write_text('[agents.ghost]\ncommand = ["ghost-agent-that-is-not-installed"]\n')
    result = run(["ghost"], aegis_env)
    assert result.returncode == 2
    assert "'ghost-agent-that-is-not-installed' (ghost) was not found on PATH" in result.stderr


def test_malformed_config_is_a_clear_error(aegis_env):
    Path(aegis_env["AEGIS_MCP_CONFIG"]).write_text("[watchdog\n")
    result = run(["demo", "-p", "x"], aegis_env)
    assert result.returncode == 2 and "invalid TOML" in result.stderr


def test_pty_agent_gets_a_terminal_its_size_and_resizes(aegis_env, tmp_path, report):
    script = tmp_path / "agent.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "def size(*_):\n"
        "    print('SIZE', *os.get_terminal_size(), flush=True)\n"
        "signal.signal(signal.SIGWINCH, size)\n"
        "print('TTY', os.isatty(0), os.isatty(1), os.ttyname(0), flush=True)\n"
        "size()\n"
        "line = sys.stdin.readline()\n"
        "print('GOT', line.strip(), flush=True)\n"
        "sys.exit(5)\n"
    )
    pty = PtyProcess(
        [*AEGIS, "run", "--", sys.executable, str(script)], aegis_env, rows=33, cols=111
    )
    try:
        pty.read_until(r"SIZE 111 33")
        assert b"TTY True True /dev/pts/" in pty.output
        pty.resize(40, 132)
        pty.read_until(r"SIZE 132 40")
        pty.write(b"typed words\r")
        pty.read_until(r"GOT typed words")
        assert pty.wait() == 5
        assert pty.attrs() == pty.saved_attrs, "terminal settings were not restored"
    finally:
        pty.close()


def test_ctrl_c_goes_to_the_agent_not_the_runner(aegis_env, report):
    pty = PtyProcess([*AEGIS, "demo", "--no-watchdog"], aegis_env)
    try:
        pty.read_until(r"> ")
        pty.write(b"\x03")
        pty.read_until(r"interrupted")
        assert pty.proc.poll() is None, "the runner died on Ctrl-C"
        pty.write(b"\x03")
        assert pty.wait() == 130
        assert pty.attrs() == pty.saved_attrs
    finally:
        pty.close()


def test_terminal_restored_when_runner_is_terminated(aegis_env):
    pty = PtyProcess([*AEGIS, "run", "--", "sleep", "300"], aegis_env)
    try:
        runner_socket(Path(aegis_env["AEGIS_MCP_RUNTIME_DIR"]))
        wait_for(lambda: pty.attrs() != pty.saved_attrs, what="raw mode")
        pty.proc.send_signal(signal.SIGTERM)
        assert pty.wait() == 128 + signal.SIGTERM
        assert pty.attrs() == pty.saved_attrs
    finally:
        pty.close()


def test_sigint_in_pipe_mode_is_forwarded(aegis_env, tmp_path):
    marker = tmp_path / "got-int"
    proc = start_aegis(
        [
            "run",
            "--",
            "sh",
            "-c",
            f"trap 'touch {marker}; exit 9' INT; while :; do sleep 0.05; done",
        ],
        aegis_env,
    )
    runner_socket(Path(aegis_env["AEGIS_MCP_RUNTIME_DIR"]))
    time.sleep(0.2)  # let sh install its trap
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 9
    assert marker.exists()


def test_restart_continues_and_replaces_prompt(aegis_env, report, runtime_dir):
    proc = start_aegis(
        ["demo", "--no-watchdog", "--scenario", "say:up;quiet", "first prompt"], aegis_env
    )
    try:
        sock = runner_socket(runtime_dir)
        first = wait_reports(report, 1)[0]
        assert first["prompt"] == "first prompt" and not first["continue"]
        result = call(sock, "restart", reason="test reload", prompt="second prompt")
        assert result["restarting"] and result["restart_number"] == 1
        second = wait_reports(report, 2)[1]
        assert second["continue"] and second["prompt"] == "second prompt"
        assert second["pid"] != first["pid"]
        wait_for(lambda: call(sock, "server_status")["agent"]["status"] == "running")
        call(sock, "restart", reason="no prompt")
        third = wait_reports(report, 3)[2]
        assert third["continue"] and third["prompt"] is None
        status = wait_for(
            lambda: (s := call(sock, "server_status"))["agent"]["restarts"] == 2 and s
        )
        history = status["agent"]["restart_history"]
        assert [h["reason"] for h in history] == ["test reload", "no prompt"]
        assert history[0]["prompt"] == "second prompt"
        assert all(h["latency_secs"] >= 0 for h in history)
        # The first agent is gone, not orphaned.
        assert not Path(f"/proc/{first['pid']}").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_headless_session_stays_headless_after_restart_aegis(aegis_env, report, runtime_dir):
    proc = start_aegis(
        [
            "demo",
            "--no-watchdog",
            "-p",
            "the task",
            "--output-format",
            "stream-json",
            "--scenario",
            "quiet",
        ],
        aegis_env,
    )
    try:
        sock = runner_socket(runtime_dir)
        wait_reports(report, 1)
        call(sock, "restart", reason="reload")
        again = wait_reports(report, 2)[1]
        assert again["headless"] and again["continue"] and again["prompt"] == "the task"
        assert again["output_format"] == "stream-json"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_restart_cli_command(aegis_env, report, runtime_dir):
    proc = start_aegis(["demo", "--no-watchdog", "--scenario", "quiet"], aegis_env)
    try:
        runner_socket(runtime_dir)
        wait_reports(report, 1)
        result = run(["restart", "--prompt", "from cli"], aegis_env)
        assert result.returncode == 0 and "restart #1 requested" in result.stdout
        assert wait_reports(report, 2)[1]["prompt"] == "from cli"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    result = run(["restart"], aegis_env)
    assert result.returncode == 2 and "no running aegis-mcp runner" in result.stderr


def test_agent_that_exits_by_itself_ends_the_run(aegis_env, report):
    result = run(["demo", "--scenario", "say:bye;exit:4"], aegis_env)
    assert result.returncode == 4
    assert len(wait_reports(report, 1)) == 1


def test_socket_is_private_and_rejects_garbage(aegis_env, runtime_dir):
    proc = start_aegis(["run", "--no-watchdog", "--", "sleep", "300"], aegis_env)
    try:
        sock_path = runner_socket(runtime_dir)
        assert (sock_path.stat().st_mode & 0o777) == 0o600
        # Root's runtime directory must be searchable by the agent's user.
        assert (runtime_dir.stat().st_mode & 0o777) == (0o755 if os.geteuid() == 0 else 0o700)
        replies = []
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock_path))
            f = s.makefile("rwb")
            for line in [
                b"this is not json\n",
                b"[1, 2]\n",
                b'{"v": 99, "id": 1, "op": "hello"}\n',
                b'{"v": 1, "id": 2, "op": "no_such_op"}\n',
                b'{"v": 1, "id": 3, "op": "restart", "args": {"prompt": 5}}\n',
                b'{"v": 1, "id": 4, "op": "events", "args": "x"}\n',
                b'{"v": 1, "id": 5, "op": "hello"}\n',
            ]:
                f.write(line)
                f.flush()
                replies.append(json.loads(f.readline()))
        codes = [r.get("error", {}).get("code") for r in replies]
        assert codes == [
            "bad_request",
            "bad_request",
            "version_mismatch",
            "unknown_op",
            "invalid_argument",
            "bad_request",
            None,
        ]
        assert replies[4]["id"] == 3 and replies[-1]["ok"] and replies[-1]["result"]["runner_pid"]
        # An oversized request is refused and the runner keeps serving.
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock_path))
            # The runner hangs up once the limit is passed: the rest cannot be sent.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(b'{"v": 1, "op": "hello", "args": {"x": "' + b"a" * (2 << 20) + b'"}}\n')
            reply = json.loads(s.makefile("rb").readline())
            assert reply["error"]["code"] == "bad_request"
        assert call(sock_path, "server_status")["agent"]["status"] == "running"
        with pytest.raises(ControlError, match="plain command: it takes no prompt"):
            call(sock_path, "restart", prompt="x")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_rejects_a_peer_of_another_user(aegis_env, public_runtime):
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another uid")
    proc = start_aegis(["run", "--no-watchdog", "--", "sleep", "300"], aegis_env)
    try:
        sock_path = runner_socket(public_runtime)
        os.chmod(sock_path, 0o666)  # even a permissive mode must not let others in
        probe = (
            "import os, socket, sys; os.setgid(65534); os.setuid(65534);"
            "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
            # The runner answers a foreign peer at once and hangs up: just read.
            "print(s.makefile('rb').readline().decode())"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe, str(sock_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.stdout, out.stderr
        reply = json.loads(out.stdout)
        assert reply["ok"] is False and reply["error"]["code"] == "forbidden"
        assert call(sock_path, "hello")["runner_pid"] == proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_stale_runtime_files_are_cleaned(aegis_env, runtime_dir):
    runtime_dir.mkdir(mode=0o700, parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [
        runtime_dir / f"{kind}-{dead.pid}.{ext}"
        for kind, ext in [
            ("runner", "sock"),
            ("runner", "lock"),
            ("state", "json"),
            ("events", "jsonl"),
        ]
    ]
    for path in stale:
        path.write_text("old")
    unrelated = runtime_dir / "notes.txt"
    unrelated.write_text("keep me")
    result = run(["run", "--", "true"], aegis_env)
    assert result.returncode == 0
    assert not any(p.exists() for p in stale)
    assert unrelated.exists()
    # The finished runner removed its own files too.
    assert sorted(p.name for p in runtime_dir.iterdir()) == ["notes.txt"]


def test_live_runner_files_are_not_cleaned(aegis_env, runtime_dir):
    first = start_aegis(["run", "--no-watchdog", "--", "sleep", "300"], aegis_env)
    try:
        sock = runner_socket(runtime_dir)
        assert run(["run", "--", "true"], aegis_env).returncode == 0
        assert sock.exists() and call(sock, "hello")["runner_pid"] == first.pid
    finally:
        first.terminate()
        first.wait(timeout=30)


def test_a_runner_starting_meanwhile_never_takes_a_new_lock_for_a_dead_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aegis_mcp.control.discovery import runner_is_alive
    from aegis_mcp.paths import RunnerFiles
    from aegis_mcp.runner import runtime_files

    files = RunnerFiles(tmp_path, os.getpid())
    take = runtime_files.fcntl.flock

    def flock_after_another_runner_looked(fd: int, operation: int) -> None:
        # Another runner's start cleans the directory in the moment before we lock.
        runtime_files.clean_stale(tmp_path, own_pid=1)
        take(fd, operation)

    monkeypatch.setattr(runtime_files.fcntl, "flock", flock_after_another_runner_looked)
    lock = runtime_files.RunnerLock(files)
    monkeypatch.undo()
    try:
        assert files.lock.read_text() == f"{os.getpid()}\n"
        assert runner_is_alive(tmp_path, os.getpid())
        assert runtime_files.clean_stale(tmp_path, own_pid=1) == 0
        assert [p.name for p in tmp_path.iterdir()] == [files.lock.name]
    finally:
        lock.release()
    assert list(tmp_path.iterdir()) == []


def test_the_socket_name_appears_only_once_it_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio.base_events

    from aegis_mcp.runner.control_server import ControlServer

    path = tmp_path / "runner-1.sock"
    seen_when_listening: list[bool] = []
    listen = asyncio.base_events.Server._start_serving

    def start_serving(server: asyncio.base_events.Server) -> None:
        seen_when_listening.append(path.exists())
        listen(server)

    monkeypatch.setattr(asyncio.base_events.Server, "_start_serving", start_serving)

    async def main() -> dict:
        server = ControlServer(path, {os.getuid()})

        async def hello(args: dict, caller: object) -> dict:
            return {"hi": True}

        server.register("hello", hello)
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"v":1,"id":1,"op":"hello","args":{}}\n')
            reply = json.loads(await reader.readline())
            writer.close()
            return reply
        finally:
            await server.close()

    reply = asyncio.run(main())
    # A client connecting the moment the name appears is never refused.
    assert seen_when_listening == [False]
    assert reply["ok"] is True
    assert list(tmp_path.iterdir()) == []


def test_privilege_drop_seen_from_inside(aegis_env, public_runtime, throwaway_user):
    name, group = throwaway_user
    import grp
    import pwd

    entry = pwd.getpwnam(name)
    extra_gid = grp.getgrnam(group).gr_gid
    env = dict(aegis_env, SUDO_UID=str(entry.pw_uid), SUDO_GID=str(entry.pw_gid), SUDO_USER=name)
    # The agent asks the runner for its status through the socket, as its MCP server
    # would: with its id and token.
    probe = public_runtime.parent / "probe.py"
    probe.write_text(
        "import json, os, socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect(os.environ['AEGIS_MCP_SOCKET'])\n"
        "agent, token = os.environ['AEGIS_MCP_AGENT_ID'], os.environ['AEGIS_MCP_AGENT_TOKEN']\n"
        "request = {'v': 1, 'id': 1, 'op': 'hello', 'agent': agent, 'token': token}\n"
        "s.sendall(json.dumps(request).encode() + b'\\n')\n"
        "print('REPLY', s.makefile('rb').readline().decode().strip())\n"
    )
    probe.chmod(0o644)
    script = (
        "grep -E '^(Uid|Gid|Groups|CapEff|CapPrm|CapAmb|NoNewPrivs):' /proc/self/status;"
        f"echo HOME=$HOME USER=$USER LOGNAME=$LOGNAME; /usr/bin/python3 {probe}"
    )
    result = run(["run", "--", "sh", "-c", script], env, cwd="/tmp")
    assert result.returncode == 0, result.stderr
    fields = dict(
        line.split(":", 1)
        for line in result.stdout.splitlines()
        if ":" in line and "REPLY" not in line
    )
    assert fields["Uid"].split() == [str(entry.pw_uid)] * 4
    assert fields["Gid"].split() == [str(entry.pw_gid)] * 4
    assert set(map(int, fields["Groups"].split())) == {entry.pw_gid, extra_gid}
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0
    assert int(fields["CapAmb"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    assert f"HOME={entry.pw_dir} USER={name} LOGNAME={name}" in result.stdout
    reply = json.loads(result.stdout.split("REPLY", 1)[1])
    assert reply["ok"] is True, reply
    # The user's uid, and the agent it proved to be.
    assert reply["result"]["caller"] == {
        "kind": "primary",
        "agent_id": "primary",
        "uid": entry.pw_uid,
        "pid": reply["result"]["caller"]["pid"],
    }


def test_root_without_sudo_user_says_so_and_skips_refused_flag(aegis_env, report):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    result = run(["demo", "-p", "x"], aegis_env)
    assert result.returncode == 0
    assert "running as root without a sudo user" in result.stderr
    assert "--dangerously-skip-permissions" not in wait_reports(report, 1)[0]["argv"]
    result = run(["demo", "--keep-root", "-p", "x"], aegis_env)
    assert "--keep-root" in result.stderr


def test_version_reports_hooks_and_warns_on_mismatch(aegis_env, tmp_path):
    lib = tmp_path / "libaegis_hooks.so"
    lib.write_bytes(
        b"\x7fELF junk\0AEGIS_HOOKS_INFO version=0.0.1;built=long ago;git=deadbee\0tail"
    )
    result = run(["--version"], dict(aegis_env, AEGIS_HOOKS_LIB=str(lib)))
    assert result.returncode == 0
    assert result.stdout.startswith("aegis-mcp v")
    assert f"Hooks library: {lib}" in result.stdout and "0.0.1 (git deadbee)" in result.stdout
    assert "version mismatch" in result.stderr and "make build" in result.stderr


def test_snapshot_and_event_log_follow_the_state(aegis_env, runtime_dir, report):
    proc = start_aegis(["demo", "--no-watchdog", "--scenario", "quiet"], aegis_env)
    try:
        sock = runner_socket(runtime_dir)
        agent_pid = wait_reports(report, 1)[0]["pid"]
        snapshot = runtime_dir / f"state-{proc.pid}.json"
        data = wait_for(
            lambda: (
                snapshot.exists()
                and (d := json.loads(snapshot.read_text()))["agent"]["pid"] == agent_pid
                and d
            )
        )
        assert data["runner"]["socket"] == str(sock)
        assert (snapshot.stat().st_mode & 0o777) == 0o600
        call(sock, "restart", reason="snapshot")
        wait_for(lambda: json.loads(snapshot.read_text())["agent"]["restarts"] == 1)
        lines = (runtime_dir / f"events-{proc.pid}.jsonl").read_text().splitlines()
        # A root runner may first report what dead runners (of anyone) left.
        kinds = [json.loads(line)["kind"] for line in lines]
        kinds = [kind for kind in kinds if kind != "runner.cleanup"]
        assert kinds[0] == "runner.start" and "agent.restarted" in kinds
        assert not list(runtime_dir.glob(".*.tmp")), "a temporary snapshot was left behind"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not snapshot.exists()


def test_doctor_reports_each_capability(aegis_env):
    result = run(["doctor"], aegis_env)
    assert result.returncode == 0
    for name in (
        "root",
        "cgroup v2",
        "kprobe tier",
        "tracepoint tier",
        "nftables",
        "hooks library",
    ):
        assert name in result.stdout
    assert "disables:" in result.stdout or "MISS" not in result.stdout


def test_netns_commands_answer(aegis_env):
    listed = run(["netns", "list"], aegis_env)
    assert listed.returncode == 0 and listed.stdout.strip()
    cleaned = run(["netns", "cleanup"], aegis_env)
    if os.geteuid() == 0:
        assert cleaned.returncode == 0
    else:
        assert cleaned.returncode == 2 and "needs root" in cleaned.stderr
