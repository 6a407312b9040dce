"""`vision-lab lab` really serves on loopback only and refuses requests without its token."""
import time
import urllib.error
import urllib.request

from lab_helpers import listening_addresses, start_lab, stop_lab


def test_lab_listens_on_loopback_and_requires_token(tmp_path):
    lab = start_lab(tmp_path)
    port, token = lab.port, lab.token
    try:
        assert len(token) >= 32
        listening = set()
        for _ in range(20):  # the socket may open a moment after the log line
            listening = listening_addresses(port)
            if listening:
                break
            time.sleep(0.5)
        # loopback only: 0100007F is 127.0.0.1 in /proc's byte order; no wildcard 00000000 or ::
        assert listening == {"0100007F"}, listening
        for attempt in range(30):  # the API may answer a moment after the URL is printed
            try:
                with urllib.request.urlopen(f"{lab.base}/api/contents?token={token}", timeout=10) as ok:
                    assert ok.status == 200 and b"00_settings.ipynb" in ok.read()
                break
            except urllib.error.URLError:
                time.sleep(1)
        for url in (f"{lab.base}/api/contents", f"{lab.base}/api/contents?token=wrong", f"{lab.base}/api/kernels"):
            try:
                urllib.request.urlopen(url, timeout=10)
                raise AssertionError(f"{url} answered without the token")
            except urllib.error.HTTPError as refused:
                assert refused.code == 403, (url, refused.code)
    finally:
        stop_lab(lab, timeout=20)
    # stopping `vision-lab lab` stops the server itself: nothing is left listening on the port
    for _ in range(20):
        if not listening_addresses(port):
            break
        time.sleep(0.5)
    assert not listening_addresses(port), "JupyterLab outlived the `vision-lab lab` process that started it"
