"""A stand-in for the one Gitea API endpoint the poll calls, on 127.0.0.1:
``POST /api/v1/repos/{owner}/{repo}/actions/workflows/{file}/dispatches``
(go-gitea/gitea#32059, from Gitea 1.24), answering in its documented shape:

* 204 No Content: the run was created (in the :class:`workflow_driver.Gitea`
  behind it, at its virtual time);
* 404 with ``{"message": ...}``: a Gitea before 1.24 (no such route), another
  repository, or a workflow file that does not exist;
* 401 without a valid token, 403 for a token without write access to the
  repository's actions;
* 422 for a body without ``ref`` or an input the workflow does not declare.

``requests`` lists what was asked (path, status).
"""

from __future__ import annotations

import http.server
import json
import re
import threading

from workflow_driver import Gitea, WorkflowError

DISPATCH = re.compile(r"^/api/v1/repos/(?P<repo>[^/]+/[^/]+)/actions/workflows/(?P<file>[^/]+)/dispatches\Z")


class FakeGitea:
    def __init__(self, gitea: Gitea, token: str, *, read_only_token: str = ""):
        self.gitea = gitea
        self.token = token
        self.read_only_token = read_only_token
        self.requests: list[tuple[str, int]] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict | None]:
        m = DISPATCH.match(path)
        if not m or not self.gitea.has_dispatch_api:
            return 404, {"message": "Not Found"}
        auth = headers.get("authorization", "")
        token = auth.split(" ", 1)[1] if auth.lower().startswith(("token ", "bearer ")) else ""
        if token == self.read_only_token and token:
            return 403, {"message": "user should have permission to write actions"}
        if token != self.token:
            return 401, {"message": "token is required"}
        if m.group("repo") != self.gitea.repository:
            return 404, {"message": "repository not found"}
        if not self.gitea.workflow_path(m.group("file")).is_file():
            return 404, {"message": f"workflow {m.group('file')!r} not found"}
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return 422, {"message": "invalid JSON"}
        if not isinstance(data, dict) or not data.get("ref"):
            return 422, {"message": "ref is required"}
        inputs = {str(k): str(v) for k, v in (data.get("inputs") or {}).items()}
        try:
            self.gitea.dispatch(m.group("file"), data["ref"], inputs)
        except WorkflowError as e:
            return 422, {"message": str(e)}
        return 204, None

    def start(self) -> "FakeGitea":
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, data = fake.answer(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                fake.requests.append((self.path, status))
                payload = json.dumps(data).encode() if data is not None else b""
                self.send_response(status)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.gitea.api_url = self.api_url
        return self

    @property
    def api_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
