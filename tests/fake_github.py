"""A stand-in for the parts of GitHub's REST API the poll calls, and a
static file server for published repositories, both on 127.0.0.1.

The API answers in GitHub's documented shapes: ``releases/latest`` gives a
release object (tag_name, draft, prerelease, published_at, ...),
``commits/<branch>`` with ``Accept: application/vnd.github.sha`` gives the
bare SHA (a commit object otherwise), every answer carries an ETag and the
x-ratelimit-* headers, and a matching ``If-None-Match`` gets a 304 without
a body.  Each test scripts what comes next (``fail``, ``rate_limit``,
``release``, ...) and reads ``requests`` afterwards.

A hostile or broken server is scripted the same way: a :class:`Reply` can
trickle its status line and headers or its body one byte at a time, or
send an endless body (no Content-Length, the connection closes the answer).
Both stop when the client hangs up, or after ``give_up_after`` seconds so
that a client that never hangs up still ends; ``sent`` counts the body
bytes written.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float = 0.0
    """Seconds between the bytes of the body (0: all at once)."""
    trickle_head: bool = False
    """Trickle the status line and headers too."""
    endless: bool = False
    """A body without end (64 KiB blocks of zeros), close-delimited."""


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    status: int


def release_object(tag: str, *, draft: bool = False, prerelease: bool = False, owner: str = "EricLBuehler",
                   repo: str = "mistral.rs") -> dict:
    base = f"https://api.github.com/repos/{owner}/{repo}"
    return {
        "url": f"{base}/releases/1", "html_url": f"https://github.com/{owner}/{repo}/releases/tag/{tag}",
        "assets_url": f"{base}/releases/1/assets", "upload_url": f"{base}/releases/1/assets{{?name,label}}",
        "tarball_url": f"{base}/tarball/{tag}", "zipball_url": f"{base}/zipball/{tag}",
        "id": 1, "node_id": "RE_kwDOAAAAAM4AAAAB", "tag_name": tag, "target_commitish": "master",
        "name": tag, "body": "Release notes", "draft": draft, "prerelease": prerelease,
        "created_at": "2026-07-01T10:00:00Z", "published_at": "2026-07-01T10:05:00Z",
        "author": {"login": owner, "id": 1, "type": "User"}, "assets": [],
    }


class FakeGitHub:
    """GitHub's API for one repository; start() it, then point api_url at url."""

    def __init__(self, owner: str = "EricLBuehler", repo: str = "mistral.rs", branch: str = "master"):
        self.owner, self.repo, self.branch = owner, repo, branch
        self.release: dict | None = None
        self.raw_release: bytes | None = None
        self.head: str | None = None
        self.raw_head: bytes | None = None
        self.limit = 60
        self.remaining = 60
        self.reset = int(time.time()) + 3600
        self.queued: dict[str, list[Reply]] = {}
        self.requests: list[Request] = []
        self.sent = 0
        """Body bytes written by trickled and endless answers."""
        self.give_up_after = 30.0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    # -- scripting ---------------------------------------------------------
    @property
    def release_path(self) -> str:
        return f"/repos/{self.owner}/{self.repo}/releases/latest"

    @property
    def head_path(self) -> str:
        return f"/repos/{self.owner}/{self.repo}/commits/{self.branch}"

    def queue(self, path: str, *replies: Reply) -> None:
        """Answers given before the normal one, in order, for path."""
        self.queued.setdefault(path, []).extend(replies)

    def fail(self, path: str, times: int, status: int = 502) -> None:
        self.queue(path, *[Reply(status, b'{"message": "Server Error"}', {"Content-Type": "application/json"})] * times)

    def rate_limit(self, path: str | None = None, *, reset_in: int = 1800, secondary: bool = False,
                   status: int = 403) -> None:
        """The next answer (for path, or for every path) is GitHub's rate-limit answer."""
        reset = int(time.time()) + reset_in
        if secondary:
            headers = {"retry-after": str(reset_in), "Content-Type": "application/json"}
            body = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}
        else:
            headers = {"x-ratelimit-limit": str(self.limit), "x-ratelimit-remaining": "0",
                       "x-ratelimit-reset": str(reset), "x-ratelimit-used": str(self.limit),
                       "x-ratelimit-resource": "core", "Content-Type": "application/json"}
            body = {"message": "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated"
                               " requests get a higher rate limit. Check out the documentation for more details.)",
                    "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}
        reply = Reply(status, json.dumps(body).encode(), headers)
        for p in ([path] if path else [self.release_path, self.head_path]):
            self.queue(p, reply)

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    # -- answering ---------------------------------------------------------
    def _normal(self, path: str, headers: dict[str, str]) -> Reply:
        if path == self.release_path:
            if self.raw_release is not None:
                return Reply(200, self.raw_release, {"Content-Type": "application/json; charset=utf-8"})
            if self.release is None:
                return Reply(404, b'{"message": "Not Found", "documentation_url": '
                                  b'"https://docs.github.com/rest/releases/releases#get-the-latest-release", "status": "404"}',
                             {"Content-Type": "application/json"})
            return Reply(200, json.dumps(self.release).encode(), {"Content-Type": "application/json; charset=utf-8"})
        if path == self.head_path:
            if self.raw_head is not None:
                return Reply(200, self.raw_head, {"Content-Type": "application/vnd.github.sha; charset=utf-8"})
            if self.head is None:
                return Reply(422, b'{"message": "No commit found for SHA: master"}', {"Content-Type": "application/json"})
            if headers.get("accept") == "application/vnd.github.sha":
                return Reply(200, self.head.encode(), {"Content-Type": "application/vnd.github.sha; charset=utf-8"})
            return Reply(200, json.dumps({"sha": self.head, "commit": {"message": "x"}}).encode(),
                         {"Content-Type": "application/json; charset=utf-8"})
        return Reply(404, b'{"message": "Not Found"}', {"Content-Type": "application/json"})

    def answer(self, path: str, headers: dict[str, str]) -> Reply:
        with self._lock:
            queued = self.queued.get(path)
            reply = queued.pop(0) if queued else self._normal(path, headers)
            if reply.status == 200:
                etag = 'W/"' + hashlib.sha256(reply.body + headers.get("accept", "").encode()).hexdigest()[:32] + '"'
                reply = dataclasses.replace(reply, headers=dict(reply.headers, ETag=etag))
                if headers.get("if-none-match") == etag:
                    reply = Reply(304, b"", {"ETag": etag})
            if "x-ratelimit-remaining" not in reply.headers:
                if reply.status != 304 or "authorization" not in headers:
                    self.remaining = max(0, self.remaining - 1)
                reply.headers.update({"x-ratelimit-limit": str(self.limit), "x-ratelimit-remaining": str(self.remaining),
                                      "x-ratelimit-reset": str(self.reset), "x-ratelimit-resource": "core"})
            self.requests.append(Request(path, headers, reply.status))
            return reply

    def _trickle(self, out, data: bytes, pause: float, until: float, *, count: bool = True) -> bool:
        """Write data, a byte per pause when pause > 0; False once it is time to give up."""
        for part in ([data[i:i + 1] for i in range(len(data))] if pause else [data]):
            if self._stopping.is_set() or time.monotonic() > until:
                return False
            out.write(part)
            out.flush()
            if count:
                with self._lock:
                    self.sent += len(part)
            if pause:
                self._stopping.wait(pause)
        return True

    # -- server ------------------------------------------------------------
    def start(self, tls: "ssl.SSLContext | None" = None) -> "FakeGitHub":
        """Serve on 127.0.0.1, over TLS with a server context."""
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                reply = fake.answer(self.path, {k.lower(): v for k, v in self.headers.items()})
                if not (reply.trickle or reply.endless):
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    try:
                        self.wfile.write(reply.body)
                    except OSError:  # the client hung up (it stops reading past its size limit)
                        pass
                    return
                self.close_connection = True
                length = "Connection: close" if reply.endless else f"Content-Length: {len(reply.body)}"
                head = "".join([f"HTTP/1.1 {reply.status} Slow\r\n", *(f"{k}: {v}\r\n" for k, v in reply.headers.items()),
                                f"{length}\r\n\r\n"]).encode("latin-1")
                until = time.monotonic() + fake.give_up_after
                try:
                    if fake._trickle(self.wfile, head, reply.trickle if reply.trickle_head else 0.0, until, count=False):
                        if reply.endless:
                            while fake._trickle(self.wfile, bytes(65536), 0.0, until):
                                pass
                        else:
                            fake._trickle(self.wfile, reply.body, reply.trickle, until)
                except OSError:  # the client hung up
                    pass

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https" if tls else "http"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"{self._scheme}://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._stopping.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()


class StaticServer:
    """Serves a directory on 127.0.0.1, as nginx serves the published tree.
    ``status`` forces an answer for every request (e.g. 503: a broken host)."""

    def __init__(self, root: Path):
        self.root = root
        self.status: int | None = None
        self.paths: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> "StaticServer":
        static = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                static.paths.append(self.path)
                if static.status is not None:
                    self.send_error(static.status)
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(self.root))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
