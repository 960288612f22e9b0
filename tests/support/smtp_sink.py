#!/usr/bin/env python3
"""A real SMTP server for verifyd's email tests, built on aiosmtpd.

    smtp_sink.py DIR [--host 127.0.0.1] [--port 0] [--auth USER:PASSWORD]

Listens on HOST:PORT (port 0 picks a free one) and prints the bound port
as the first line on stdout. Each message it accepts becomes two files in
DIR, numbered in arrival order:

    NNNNNN.eml   the raw message as received (after DATA)
    NNNNNN.json  the envelope (mail_from, rcpt_tos) and the message as
                 Python's email package parses it: decoded headers and
                 every leaf MIME part with its content type and text

The .json file is written last, atomically: once it exists, both are
complete. Recipients whose local part starts with "reject" are refused with
550 5.1.1 (echoing the address, as real servers do); "tempfail" gets 451
4.3.0. With --auth, clients must log in (PLAIN or LOGIN, allowed without
TLS: the sink is on loopback) with that user and password before sending.
The server stops when stdin closes, so it never outlives the test that
started it.
"""

import argparse
import itertools
import json
import os
import sys
import threading
from email import policy
from email.parser import BytesParser

AIOSMTPD_VERSION = "1.4.6"

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
except ImportError:
    sys.stderr.write(
        f"smtp_sink: aiosmtpd is not installed for {sys.executable}: "
        f"run ./scripts/test (it creates target/test-venv), or "
        f"pip install 'aiosmtpd=={AIOSMTPD_VERSION}' into a virtualenv and "
        f"set SMTP_SINK_PYTHON to its python\n"
    )
    sys.exit(3)


class Sink:
    """The aiosmtpd handler: refuses the recipients tests ask it to, and
    writes everything else to the directory."""

    def __init__(self, directory):
        self.directory = directory
        self.numbers = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.rsplit("@", 1)[0].lower()
        if local.startswith("reject"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if local.startswith("tempfail"):
            return f"451 4.3.0 <{address}>: Temporary lookup failure, try again"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        stem = os.path.join(self.directory, f"{next(self.numbers):06d}")
        with open(stem + ".eml", "wb") as f:
            f.write(raw)
        summary = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            **parse(raw),
        }
        with open(stem + ".json.tmp", "w", encoding="utf-8") as f:
            json.dump(summary, f, ensure_ascii=False, indent=1)
        os.replace(stem + ".json.tmp", stem + ".json")
        return "250 2.0.0 OK: queued"


def parse(raw):
    message = BytesParser(policy=policy.default).parsebytes(raw)
    headers = {}
    for name, value in message.items():
        headers.setdefault(name.lower(), []).append(str(value))
    parts = []
    for part in message.walk():
        if part.is_multipart():
            continue
        parts.append(
            {
                "content_type": part.get_content_type(),
                "charset": part.get_content_charset(),
                "transfer_encoding": part.get("Content-Transfer-Encoding"),
                "text": part.get_content(),
            }
        )
    return {
        "content_type": message.get_content_type(),
        "headers": headers,
        "parts": parts,
    }


def authenticator(expected):
    user, password = (s.encode() for s in expected.split(":", 1))

    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            mechanism in ("PLAIN", "LOGIN")
            and auth_data.login == user
            and auth_data.password == password
        )
        # handled=False: aiosmtpd answers 535 itself.
        return AuthResult(success=ok, handled=False)

    return check


class EphemeralController(Controller):
    """A Controller that also works with port 0: it reads the bound port
    back before connecting to itself to check the server is up."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("directory")
    args.add_argument("--host", default="127.0.0.1")
    args.add_argument("--port", type=int, default=0)
    args.add_argument("--auth", metavar="USER:PASSWORD")
    opts = args.parse_args()
    os.makedirs(opts.directory, exist_ok=True)

    auth = {}
    if opts.auth:
        auth = {
            "authenticator": authenticator(opts.auth),
            "auth_required": True,
            "auth_require_tls": False,
        }
    controller = EphemeralController(
        Sink(opts.directory),
        hostname=opts.host,
        port=opts.port,
        enable_SMTPUTF8=True,
        ready_timeout=10,
        **auth,
    )
    controller.start()
    print(controller.port, flush=True)

    done = threading.Event()

    def wait_for_eof():
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    controller.stop()


if __name__ == "__main__":
    main()
