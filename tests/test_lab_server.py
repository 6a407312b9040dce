"""`vision-lab lab` really serves on loopback only and refuses requests without its token."""
import os
import re
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port`, from /proc/net/tcp{,6}."""
    addresses = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                addresses.add(address)
    return addresses


def test_lab_listens_on_loopback_and_requires_token(tmp_path):
    port = _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    server = subprocess.Popen([str(Path(sys.executable).parent / "vision-lab"), "lab", "--no-browser", f"--port={port}"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        token, log, deadline = None, [], time.time() + 120
        while token is None and time.time() < deadline and server.poll() is None:
            ready, _, _ = select.select([server.stdout], [], [], 1)
            if ready:
                line = server.stdout.readline()
                log.append(line)
                match = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=([0-9a-f]+)", line)
                token = match.group(1) if match else None
        if token is None and server.poll() is not None:
            log.append(server.stdout.read())
        assert token, "the lab did not print its token URL:\n" + "".join(log[-30:])
        while not any("is running at" in line for line in log) and time.time() < deadline:
            line = server.stdout.readline()  # wait until Jupyter itself says it serves
            assert line or server.poll() is None, "JupyterLab exited:\n" + "".join(log[-30:])
            log.append(line)
        assert len(token) >= 32
        listening = set()
        for _ in range(20):  # the socket may open a moment after the log line
            listening = _listening_addresses(port)
            if listening:
                break
            time.sleep(0.5)
        # loopback only: 0100007F is 127.0.0.1 in /proc's byte order; no wildcard 00000000 or ::
        assert listening == {"0100007F"}, listening
        base = f"http://127.0.0.1:{port}"
        for attempt in range(30):  # the API may answer a moment after the URL is printed
            try:
                with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=10) as ok:
                    assert ok.status == 200 and b"00_settings.ipynb" in ok.read()
                break
            except urllib.error.URLError:
                time.sleep(1)
        for url in (f"{base}/api/contents", f"{base}/api/contents?token=wrong", f"{base}/api/kernels"):
            try:
                urllib.request.urlopen(url, timeout=10)
                raise AssertionError(f"{url} answered without the token")
            except urllib.error.HTTPError as refused:
                assert refused.code == 403, (url, refused.code)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    # stopping `vision-lab lab` stops the server itself: nothing is left listening on the port
    for _ in range(20):
        if not _listening_addresses(port):
            break
        time.sleep(0.5)
    assert not _listening_addresses(port), "JupyterLab outlived the `vision-lab lab` process that started it"
