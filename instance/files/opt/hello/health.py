"""hello health endpoint: GET /health (and /, what the front door serves)
answers JSON with the deployment digest and generation.

Standard library only: it runs on stock Ubuntu 22.04/24.04 and Debian 12.
"""

import json
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MANIFEST = "/etc/respot/manifest.json"
PORT = 8080
STARTED = time.time()


def manifest():
    try:
        with open(MANIFEST, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path not in ("/", "/health"):
            self.send_error(404)
            return
        m = manifest()
        body = json.dumps(
            {
                "status": "ok",
                "deployment": m.get("deployment"),
                "digest": m.get("digest"),
                "generation": m.get("generation"),
                "host": socket.gethostname(),
                "uptime_s": round(time.time() - STARTED, 1),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", PORT), Health).serve_forever()
