"""A loopback HTTP server speaking the part of the Hugging Face Hub protocol that
``hf_hub_download`` uses, and plain file serving for release URLs.

Hub: ``HEAD|GET /{repo_id}/resolve/{revision}/{filename}`` answer with ``X-Repo-Commit``,
``ETag`` (the sha256 for LFS-style files, as the Hub does), ``Content-Length`` and honour
``Range``; a missing repo/revision/file gets 404 with ``X-Error-Code``. Releases:
``GET /releases/{name}`` serves bytes registered with :meth:`LoopbackHub.add_release`.
Uploads (what ``HfApi.upload_folder`` sends): ``POST /api/repos/create``, ``/api/validate-yaml``,
``/api/models/{repo}/preupload/{rev}`` answering ``uploadMode: "lfs"`` for files above
:attr:`LoopbackHub.lfs_threshold` bytes (the Hub's small-file limit, 10 MiB) and ``"regular"`` below;
large files then go through the Git LFS batch API (``POST /{repo}.git/info/lfs/objects/batch`` ->
a ``basic`` upload action), ``PUT /lfs-upload/{oid}`` of the bytes (sha256 and size checked) and
``POST /lfs-verify``; the commit (``/api/models/{repo}/commit/{rev}``, ndjson) names them in
``lfsFile`` entries by oid beside base64 ``file`` entries. huggingface_hub takes this path when
Xet is disabled (``HF_HUB_DISABLE_XET``); the loopback does not speak Xet.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}   # repo -> commit -> files
        self.branches: dict[str, dict[str, str]] = {}              # repo -> branch -> commit
        self.releases: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.truncate: set[str] = set()                            # paths served short
        self.lfs_threshold = 10 * 1024 * 1024                      # preupload: larger files go through LFS
        self.lfs_objects: dict[str, bytes] = {}                    # oid (sha256) -> bytes uploaded by PUT
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LoopbackHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Publish ``files`` as a new commit of ``repo_id`` on ``branch``; returns the commit sha."""
        previous = self.repos.get(repo_id, {}).get(self.branches.get(repo_id, {}).get(branch, ""), {})
        merged = {**previous, **files}
        digest = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in merged.items())).encode()
                              + str(len(self.repos.get(repo_id, {}))).encode())
        commit = digest.hexdigest()
        self.repos.setdefault(repo_id, {})[commit] = merged
        self.branches.setdefault(repo_id, {})[branch] = commit
        return commit

    def add_release(self, name: str, data: bytes) -> str:
        self.releases[name] = data
        return f"{self.url}/releases"

    def _lookup(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/releases/"):
            name = path[len("/releases/"):]
            if name not in self.releases:
                return 404, {}, b"not found"
            return 200, {"ETag": f'"{hashlib.sha256(self.releases[name]).hexdigest()}"'}, self.releases[name]
        parts = path.lstrip("/").split("/")
        if "resolve" not in parts:
            return 404, {"X-Error-Code": "RepoNotFound"}, b""
        i = parts.index("resolve")
        repo_id, revision, filename = "/".join(parts[:i]), parts[i + 1], "/".join(parts[i + 2:])
        if repo_id not in self.repos:
            return 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
        commit = self.branches[repo_id].get(revision, revision)
        if commit not in self.repos[repo_id]:
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b""
        files = self.repos[repo_id][commit]
        if filename not in files:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                         "X-Repo-Commit": commit}, b""
        data = files[filename]
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, data

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _answer(self, with_body: bool) -> None:
                hub.requests.append((self.command, self.path))
                status, headers, data = hub._lookup(self.path.split("?")[0])
                start, end = 0, len(data)
                if status == 200 and self.headers.get("Range", "").startswith("bytes="):
                    lo, _, hi = self.headers["Range"][len("bytes="):].partition("-")
                    start, end = int(lo or 0), (int(hi) + 1 if hi else len(data))
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
                body = data[start:end]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    if self.path.split("?")[0] in hub.truncate:
                        body = body[: len(body) // 2]
                    self.wfile.write(body)

            def _json(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                hub.requests.append(("POST", self.path))
                body = self._body()
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    request = json.loads(body)
                    repo = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
                    hub.repos.setdefault(repo, {})
                    hub.branches.setdefault(repo, {})
                    return self._json(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if path == "/api/validate-yaml":
                    return self._json(200, {})
                parts = path.split("/")
                if len(parts) >= 7 and parts[1] == "api" and parts[5] == "preupload":
                    files = json.loads(body)["files"]
                    return self._json(200, {"files": [
                        {"path": f["path"], "uploadMode": "lfs" if f["size"] > hub.lfs_threshold else "regular",
                         "shouldIgnore": False} for f in files]})
                if path.endswith(".git/info/lfs/objects/batch"):
                    request = json.loads(body)
                    objects = []
                    for obj in request["objects"]:
                        entry = {"oid": obj["oid"], "size": obj["size"]}
                        if obj["oid"] not in hub.lfs_objects:  # already stored: no actions, nothing to send
                            entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}?size={obj['size']}"},
                                                "verify": {"href": f"{hub.url}/lfs-verify"}}
                        objects.append(entry)
                    return self._json(200, {"transfer": "basic", "objects": objects})
                if path == "/lfs-verify":
                    request = json.loads(body)
                    ok = len(hub.lfs_objects.get(request["oid"], b"")) == request["size"]
                    return self._json(200 if ok else 404, {} if ok else {"error": "object not uploaded"})
                if len(parts) >= 7 and parts[1] == "api" and parts[5] == "commit":
                    repo, branch = f"{parts[3]}/{parts[4]}", parts[6]
                    files = {}
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        elif item["key"] == "lfsFile":
                            oid = item["value"]["oid"]
                            if oid not in hub.lfs_objects:
                                return self._json(400, {"error": f"LFS object {oid} was never uploaded"})
                            files[item["value"]["path"]] = hub.lfs_objects[oid]
                    commit = hub.add_commit(repo, files, branch=branch)
                    return self._json(200, {"commitOid": commit, "commitUrl": f"{hub.url}/{repo}/commit/{commit}",
                                            "success": True})
                return self._json(404, {"error": f"not served by the loopback hub: {path}"})

            def _body(self) -> bytes:
                if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                    return self.rfile.read(int(self.headers.get("Content-Length", 0)))
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()

            def do_PUT(self) -> None:
                hub.requests.append(("PUT", self.path))
                path, _, query = self.path.partition("?")
                if not path.startswith("/lfs-upload/"):
                    return self._json(404, {"error": f"not served by the loopback hub: {path}"})
                oid = path[len("/lfs-upload/"):]
                data = self._body()
                expected_size = int(dict(p.split("=") for p in query.split("&") if p).get("size", len(data)))
                if hashlib.sha256(data).hexdigest() != oid or len(data) != expected_size:
                    return self._json(400, {"error": "uploaded bytes do not match the announced oid/size"})
                hub.lfs_objects[oid] = data
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:
                self._answer(with_body=False)

            def do_GET(self) -> None:
                self._answer(with_body=True)

        return Handler
