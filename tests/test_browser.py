"""A log panel in a real browser (Debian's headless chromium) calling the API across origins.

The panel is a page served from another loopback origin than the API's. Its script calls
Get Logs and downloads a log with a Bearer token through `fetch()`, writes what it got
into the page, and posts it back to the page's own server, which the test awaits. A panel
from an origin that is not allowed must see its fetch rejected.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from testkit.dataset import LOG_A2
from testkit.servers import SECRET, ServerProcess

LOGS = "/api/v1/models/mdl-alpha/training-metrics/logs"

# The panel: every call sends the token, so each needs a preflight first.
SCRIPT = """
const api = %(api)s, headers = {Authorization: "Bearer " + %(token)s};
async function panel() {
  const out = {};
  const page = await fetch(api + "%(logs)s?run_id=run-a2&limit=2&direction=forward", {headers});
  out.page = {status: page.status, body: await page.json(),
              request_id: page.headers.get("X-Request-ID")};
  const log = await fetch(api + "%(logs)s/download?run_id=run-a2", {headers});
  out.log = {status: log.status, bytes: Array.from(new Uint8Array(await log.arrayBuffer())),
             disposition: log.headers.get("Content-Disposition"), etag: log.headers.get("ETag")};
  const part = await fetch(api + "%(logs)s/download?run_id=run-a2",
                           {headers: {...headers, Range: "bytes=0-9"}});
  out.part = {status: part.status, range: part.headers.get("Content-Range"),
              text: await part.text()};
  const missing = await fetch(api + "/api/v1/models/mdl-nope/training-metrics/logs", {headers});
  out.missing = {status: missing.status, body: await missing.json()};
  return out;
}
function report(result) {
  document.getElementById("result").textContent = JSON.stringify(result);
  return fetch("/result", {method: "POST", body: JSON.stringify(result)});
}
panel().then(report, (error) => report({error: String(error)}));
"""


@dataclass
class PanelServer:
    """Serves the panel page and awaits the result its script posts back."""

    script: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    posted: threading.Event = field(default_factory=threading.Event)
    httpd: ThreadingHTTPServer | None = None

    @property
    def origin(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def page(self) -> bytes:
        return (
            '<!doctype html><html><body><pre id="result">waiting</pre>'
            f"<script>{self.script}</script></body></html>"
        ).encode()


@pytest.fixture
def panels() -> Iterator[tuple[PanelServer, PanelServer]]:
    servers = (PanelServer(), PanelServer())
    for panel in servers:
        panel.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(panel))
        threading.Thread(target=panel.httpd.serve_forever, daemon=True).start()
    try:
        yield servers
    finally:
        for panel in servers:
            assert panel.httpd is not None
            panel.httpd.shutdown()
            panel.httpd.server_close()


def _handler(panel: PanelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = panel.page()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            panel.result = json.loads(self.rfile.read(length))
            self.send_response(204)
            self.end_headers()
            panel.posted.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    return path


def browse(url: str) -> str:
    """Load `url` in headless chromium and return the page's DOM once its script is done."""
    with tempfile.TemporaryDirectory() as profile:
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            # Virtual time waits for the page's fetches; the budget bounds the rest.
            "--virtual-time-budget=30000",
            "--dump-dom",
        ]
        done = subprocess.run(
            [chromium(), *flags, url], capture_output=True, timeout=120, check=False
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode()


def test_a_panel_on_an_allowed_origin_reads_pages_and_logs(
    panels: tuple[PanelServer, PanelServer], local_store: str, token: str
) -> None:
    allowed, refused = panels
    env = {
        "STREAMER_STORAGE_URL": local_store,
        "STREAMER_JWT_SECRET": SECRET,
        "STREAMER_CORS_ORIGINS": allowed.origin,
    }
    server = ServerProcess([], env)
    try:
        values = {"api": json.dumps(server.url), "token": json.dumps(token), "logs": LOGS}
        allowed.script = refused.script = SCRIPT % values
        dom = browse(allowed.origin + "/panel.html")
        assert allowed.posted.wait(60), dom
        assert json.loads(_result_text(dom)) == allowed.result
        result = allowed.result
        assert result["page"]["status"] == 200
        assert result["page"]["request_id"]
        entries = result["page"]["body"]["data"]
        assert [e["message"] for e in entries] == [
            "Initializing distributed training cluster.",
            "Successfully loaded dataset: 'churn_data_v2'. Shape: (100000, 45)",
        ]
        assert result["log"]["status"] == 200
        assert bytes(result["log"]["bytes"]) == LOG_A2
        assert result["log"]["disposition"].startswith(
            'attachment; filename="training-log-run-a2.txt"'
        )
        assert result["log"]["etag"]
        assert result["part"] == {
            "status": 206,
            "range": f"bytes 0-9/{len(LOG_A2)}",
            "text": LOG_A2[:10].decode(),
        }
        assert result["missing"]["status"] == 404
        assert result["missing"]["body"]["code"] == "model_not_found"

        dom = browse(refused.origin + "/panel.html")
        assert refused.posted.wait(60), dom
        assert refused.result == {"error": "TypeError: Failed to fetch"}
    finally:
        assert server.stop() in (0, -15)


def _result_text(dom: str) -> str:
    start = dom.index('<pre id="result">') + len('<pre id="result">')
    text = dom[start : dom.index("</pre>", start)]
    return (
        text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    )
