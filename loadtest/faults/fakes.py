"""The providers verifyd's replicas send through during a run, on loopback.

- `SmsGateway`: verifyd's generic HTTP provider (docs/delivery.md, "The
  generic HTTP provider"). It keeps the last code sent for each
  verification, which is how the checker reads its codes, and it can hang:
  every request then waits, unanswered, until released.
- `SmtpServer`: enough SMTP for lettre to deliver. It can tarpit: every
  reply then comes 30 s late, the way a relay that throttles a sender does.
"""

from __future__ import annotations

import json
import re
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from redis_nodes import free_port

# Codes are six digits in the harness's configuration; the SMS text holds no
# other run of six digits.
CODE = re.compile(r"\b(\d{6})\b")
HANG_LIMIT_S = 120
TARPIT_DELAY_S = 30


class SmsGateway:
    def __init__(self):
        self.port = free_port()
        self.codes: dict[str, str] = {}
        self.sent = 0
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.released.set()
        self.waiting = 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                message = json.loads(self.rfile.read(length))
                if not gateway.released.is_set():
                    with gateway.lock:
                        gateway.waiting += 1
                    gateway.released.wait(HANG_LIMIT_S)
                    with gateway.lock:
                        gateway.waiting -= 1
                found = CODE.search(message.get("body", ""))
                with gateway.lock:
                    gateway.sent += 1
                    if found:
                        gateway.codes[message["verification_id"]] = found.group(1)
                    reference = f"gw-{gateway.sent}"
                answer = json.dumps({"id": reference}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # verifyd gave up on a hung request

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/send"

    def code_for(self, verification_id: str) -> str | None:
        with self.lock:
            return self.codes.get(verification_id)

    def hang(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def stop(self) -> None:
        self.release()
        self.server.shutdown()


class SmtpServer:
    def __init__(self):
        self.port = free_port()
        self.tarpitting = threading.Event()
        self.stopping = threading.Event()
        smtp = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                # A tarpit answers, but late; a stop ends the wait.
                if smtp.tarpitting.is_set():
                    smtp.stopping.wait(TARPIT_DELAY_S)
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self):
                try:
                    self.reply("220 fake-smtp ESMTP")
                    for raw in self.rfile:
                        verb = raw.decode("latin-1").strip().split(" ", 1)[0].upper()
                        if verb in ("EHLO", "HELO"):
                            self.reply("250 fake-smtp")
                        elif verb == "DATA":
                            self.reply("354 end with <CRLF>.<CRLF>")
                            for line in self.rfile:
                                if line in (b".\r\n", b".\n"):
                                    break
                            self.reply("250 queued")
                        elif verb == "QUIT":
                            self.reply("221 bye")
                            return
                        else:
                            self.reply("250 OK")
                except OSError:
                    pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
