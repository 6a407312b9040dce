"""Start and stop `vision-lab lab` for the tests: a free loopback port, isolated Jupyter dirs, the printed token."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it, so parallel workers do not collide)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port`, from /proc/net/tcp{,6}."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                addresses.add(address)
    return addresses


def processes_mentioning(text: str) -> dict[int, str]:
    """pid → command line of every process whose command line contains `text` (this process excluded)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        if text in cmdline:
            found[int(entry.name)] = cmdline.strip()
    return found


def jupyter_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """os.environ with every per-user Jupyter dir moved under `tmp_path` (no user config, settings or workspaces)."""
    return {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
            "JUPYTER_DATA_DIR": str(tmp_path / "data"),
            "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "cfg" / "lab" / "user-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "cfg" / "lab" / "workspaces"), **extra}


@dataclass
class Lab:
    """A running `vision-lab lab`: its process, port, token and log file."""
    process: subprocess.Popen
    port: int
    log_path: Path
    runtime_dir: Path
    token: str = ""
    _log: object = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, lines: int = 40) -> str:
        """The last `lines` lines the server wrote."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def start_lab(tmp_path: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Lab:
    """Run `vision-lab lab --no-browser --port=<free>` and wait until Jupyter says it serves; returns the Lab.

    The log goes to a file, not a pipe: a pipe nobody drains would block a chatty server mid-test."""
    port = free_port()
    env = env or jupyter_env(tmp_path)
    log_path = tmp_path / "lab.log"
    log = open(log_path, "w")
    process = subprocess.Popen([str(Path(sys.executable).parent / "vision-lab"), "lab", "--no-browser", f"--port={port}"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    lab = Lab(process, port, log_path, Path(env["JUPYTER_RUNTIME_DIR"]), _log=log)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            text = log_path.read_text(errors="replace")
            match = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=([0-9a-f]+)", text)
            if match and "is running at" in text:  # Jupyter itself says it serves
                lab.token = match.group(1)
                return lab
            if process.poll() is not None:
                raise AssertionError(f"`vision-lab lab` exited with {process.returncode}:\n{lab.log()}")
            time.sleep(0.2)
        raise AssertionError(f"`vision-lab lab` did not serve within {timeout:.0f} s:\n{lab.log()}")
    except BaseException:
        stop_lab(lab)
        raise


def stop_lab(lab: Lab, timeout: float = 30) -> None:
    """SIGTERM the server (it shuts its kernels down), SIGKILL after `timeout`; then kill any kernel it left."""
    if lab.process.poll() is None:
        lab.process.terminate()
        try:
            lab.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            lab.process.kill()
            lab.process.wait(timeout=10)
    if lab._log is not None:
        lab._log.close()


def leftover_kernels(lab: Lab) -> dict[int, str]:
    """Kernels of this lab still running: their command line names a connection file in its runtime dir."""
    return processes_mentioning(str(lab.runtime_dir))


def kill_pids(pids) -> None:
    """SIGKILL these pids (processes this test started), ignoring those already gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
