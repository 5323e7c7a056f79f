"""A loopback Google Drive, reached by gdown unmodified through an HTTPS proxy.

gdown builds ``https://drive.google.com/uc?id=<id>`` from a file id and follows Drive's
confirmation page only on Google's hosts, so the test Drive is served *as* those hosts: the
server is an HTTP proxy (``HTTPS_PROXY``) that answers ``CONNECT drive.google.com:443`` (and
``drive.usercontent.google.com``) itself, terminating TLS with a certificate from a throw-away
CA (trustme; the client trusts it through ``REQUESTS_CA_BUNDLE``). Nothing leaves the machine.

Drive's behaviour reproduced: ``/uc?id=ID`` of a small file answers with the file
(``Content-Disposition: attachment``); of a large one, with the HTML page "can't scan this file
for viruses" holding ``<form id="download-form" action="https://drive.usercontent.google.com/download">``
and hidden ``id``/``export``/``confirm``/``uuid`` inputs; the form's URL then serves the file.
An unknown id answers 404.
"""

from __future__ import annotations

import socketserver
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOSTS = ("drive.google.com", "drive.usercontent.google.com")


class LoopbackDrive:
    def __init__(self, workdir: Path) -> None:
        import trustme

        self.files: dict[str, tuple[str, bytes]] = {}   # id -> (file name, bytes)
        self.confirm_above = 1024                        # files larger than this get the confirmation page
        self.requests: list[tuple[str, str]] = []        # (host, path)
        self._tokens: dict[str, str] = {}                # id -> uuid handed out on the confirmation page
        ca = trustme.CA()
        self.ca_bundle = workdir / "loopback-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_bundle))
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*HOSTS).configure_cert(self._tls)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def proxy_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LoopbackDrive":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_file(self, file_id: str, name: str, data: bytes) -> None:
        self.files[file_id] = (name, data)

    def _confirmation_page(self, file_id: str) -> bytes:
        token = self._tokens.setdefault(file_id, str(uuid.uuid4()))
        name = self.files[file_id][0]
        # As Drive sends it: the whole form on one line (gdown parses the page line by line).
        return (
            "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>\n"
            f'<p class="uc-warning-caption">Google Drive can\'t scan this file for viruses.</p><p>{name} is too large '
            "for Google to scan for viruses. Would you still like to download this file?</p>\n"
            '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
            '<input type="submit" id="uc-download-link" value="Download anyway"/>'
            f'<input type="hidden" name="id" value="{file_id}"><input type="hidden" name="export" value="download">'
            f'<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{token}"></form>\n'
            "</body></html>\n").encode()

    def answer(self, host: str, target: str) -> tuple[int, dict[str, str], bytes]:
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        file_id = query.get("id", "")
        if file_id not in self.files:
            return 404, {"Content-Type": "text/html"}, b"<html><body>Not Found</body></html>"
        name, data = self.files[file_id]
        as_file = {"Content-Type": "application/octet-stream",
                   "Content-Disposition": f'attachment; filename="{name}"'}
        if host == "drive.google.com" and url.path == "/uc":
            if len(data) > self.confirm_above:
                return 200, {"Content-Type": "text/html; charset=utf-8"}, self._confirmation_page(file_id)
            return 200, as_file, data
        if host == "drive.usercontent.google.com" and url.path == "/download":
            if query.get("confirm") != "t" or query.get("uuid") != self._tokens.get(file_id):
                return 200, {"Content-Type": "text/html; charset=utf-8"}, self._confirmation_page(file_id)
            return 200, as_file, data
        return 404, {"Content-Type": "text/html"}, b"<html><body>Not Found</body></html>"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        drive = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_CONNECT(self) -> None:
                host = self.path.split(":")[0]
                if host not in HOSTS:
                    self.send_error(502, f"the loopback Drive proxy does not reach {host}")
                    return
                self.send_response(200, "Connection Established")
                self.end_headers()
                # From here on this connection is the TLS session with "Google": serve its requests.
                self.connection = drive._tls.wrap_socket(self.connection, server_side=True)
                self.rfile = self.connection.makefile("rb", self.rbufsize)
                self.wfile = socketserver._SocketWriter(self.connection)
                self.close_connection = False

            def do_GET(self) -> None:
                host = self.headers.get("Host", "").split(":")[0]
                drive.requests.append((host, self.path))
                status, headers, body = drive.answer(host, self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
