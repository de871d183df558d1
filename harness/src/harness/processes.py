"""Child processes that never outlive their parent's intent, and free ports.

`spawn` starts a command in its own session (so it and everything it starts form one process
group) and remembers it; `stop` ends that group: SIGTERM, then SIGKILL after a grace period.
Whatever is still running when the interpreter exits is stopped the same way. Nothing is ever
killed by name.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

_RUNNING: set[subprocess.Popen] = set()
_LOCK = threading.Lock()
_PR_SET_PDEATHSIG = 1
try:  # loaded here, not in the child: the child only calls prctl before exec
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free now (bind 0, read it, close). Only for a port that must
    be known before the process that binds it starts; a server that can bind port 0 itself and
    report it should (Envoy, the echo upstream, the key server all do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the process that started it dies (Linux).
    Note that "the parent" is the thread that started it."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    command: list[str],
    *,
    log: Path | None = None,
    stdout: int | IO | None = None,
    stderr: int | IO | None = None,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    die_with_parent: bool = False,
    **popen: Any,
) -> subprocess.Popen:
    """Start `command` in a new session, stdin from /dev/null; stdout and stderr to `log` (a
    file, truncated) unless `stdout` / `stderr` say otherwise (e.g. `subprocess.PIPE`).
    `die_with_parent` also asks the kernel to SIGTERM it if this process dies without cleaning
    up (start it from the main thread then)."""
    handle = open(log, "wb") if log is not None else None
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=handle if stdout is None else stdout,
            stderr=handle if stderr is None else stderr,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
            **popen,
        )
    finally:
        if handle is not None:
            handle.close()
    with _LOCK:
        _RUNNING.add(process)
    return process


def terminate_group(process: subprocess.Popen | None, timeout: float) -> int | None:
    """Stops a process started with `start_new_session=True` and everything it started: SIGTERM
    to its process group, SIGKILL if it has not exited within `timeout`. Returns the exit code."""
    if process is None:
        return None
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=timeout)
    return process.returncode


def stop(process: subprocess.Popen | None, timeout: float = 10.0) -> int | None:
    """`terminate_group`, and forget the process; returns its exit code."""
    if process is None:
        return None
    with _LOCK:
        _RUNNING.discard(process)
    return terminate_group(process, timeout)


@atexit.register
def stop_all(timeout: float = 5.0) -> None:
    """Stop every process `spawn` started that is still remembered."""
    with _LOCK:
        running = list(_RUNNING)
    for process in running:
        stop(process, timeout)
