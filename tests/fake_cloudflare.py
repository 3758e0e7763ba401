"""A local stand-in for Cloudflare's API v4, answering in its documented shapes.

Every answer is ``{"success": ..., "errors": [...], "messages": [...],
"result": ...}`` (lists also carry ``result_info``).  Served:
``GET /zones?name=``, ``GET /zones/{id}/dns_records?name=&type=``,
``POST /zones/{id}/dns_records``, ``PUT``/``PATCH``/``DELETE
/zones/{id}/dns_records/{rid}``.  A request without the right bearer token
gets 403 with ``{"code": 10000, "message": "Authentication error"}``.
Requests are recorded for the tests to inspect.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FakeCloudflare:
    def __init__(self, token: str, zones: dict[str, str] | None = None):
        self.token = token
        self.zones = zones if zones is not None else {"example.org": "023e105f4ecef8ad9ca31a8372d0c353"}
        self.records: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict | None]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/client/v4"

    def __enter__(self) -> "FakeCloudflare":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_record(self, zone: str, name: str, rtype: str, content: str, proxied: bool = False) -> str:
        rid = uuid.uuid4().hex
        self.records[rid] = {"id": rid, "zone_id": self.zones[zone], "zone_name": zone, "name": name, "type": rtype,
                             "content": content, "proxied": proxied, "proxiable": True, "ttl": 1, "locked": False,
                             "meta": {"auto_added": False}, "created_on": "2026-01-01T00:00:00Z",
                             "modified_on": "2026-01-01T00:00:00Z"}
        return rid

    def named(self, name: str, rtype: str) -> list[dict]:
        return [r for r in self.records.values() if r["name"] == name and r["type"] == rtype]

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _ in self.requests if m != "GET"]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, result=None, errors=None, info=None):
                body = {"success": not errors, "errors": errors or [], "messages": [], "result": result}
                if info is not None:
                    body["result_info"] = info
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _list(self, items):
                self._send(200, items, info={"page": 1, "per_page": 100, "count": len(items),
                                             "total_count": len(items), "total_pages": 1})

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def _handle(self, method: str):
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                body = self._body() if method in ("POST", "PUT", "PATCH") else None
                with fake.lock:
                    fake.requests.append((method, self.path, body))
                    if self.headers.get("Authorization") != f"Bearer {fake.token}":
                        return self._send(403, None, [{"code": 10000, "message": "Authentication error"}])
                    parts = url.path.removeprefix("/client/v4").strip("/").split("/")
                    if parts == ["zones"] and method == "GET":
                        zones = [{"id": zid, "name": name, "status": "active"} for name, zid in fake.zones.items()
                                 if query.get("name") in (None, name)]
                        return self._list(zones)
                    if len(parts) >= 3 and parts[0] == "zones" and parts[2] == "dns_records":
                        zone = next((n for n, zid in fake.zones.items() if zid == parts[1]), None)
                        if zone is None:
                            return self._send(404, None, [{"code": 7003, "message": "Could not route to /zones/"
                                                           f"{parts[1]}/dns_records, perhaps your object identifier is invalid?"}])
                        if len(parts) == 3 and method == "GET":
                            items = [r for r in fake.records.values() if r["zone_id"] == parts[1]
                                     and query.get("name") in (None, r["name"]) and query.get("type") in (None, r["type"])]
                            return self._list(items)
                        if len(parts) == 3 and method == "POST":
                            if not body or not {"type", "name", "content"} <= set(body):
                                return self._send(400, None, [{"code": 9000, "message": "DNS name is invalid."}])
                            rid = fake.add_record(zone, body["name"], body["type"], body["content"],
                                                  bool(body.get("proxied", False)))
                            fake.records[rid]["ttl"] = body.get("ttl", 1)
                            return self._send(200, fake.records[rid])
                        if len(parts) == 4:
                            rec = fake.records.get(parts[3])
                            if rec is None:
                                return self._send(404, None, [{"code": 81044, "message": "Record does not exist."}])
                            if method == "PUT":
                                for key in ("type", "name", "content"):
                                    if key not in body:
                                        return self._send(400, None, [{"code": 9000, "message": f"{key} is required"}])
                                rec.update({k: body[k] for k in ("type", "name", "content")})
                                rec["proxied"] = bool(body.get("proxied", False))
                                rec["ttl"] = body.get("ttl", 1)
                                return self._send(200, rec)
                            if method == "PATCH":
                                rec.update({k: v for k, v in body.items() if k in ("type", "name", "content", "proxied", "ttl")})
                                return self._send(200, rec)
                            if method == "DELETE":
                                del fake.records[parts[3]]
                                return self._send(200, {"id": parts[3]})
                            if method == "GET":
                                return self._send(200, rec)
                    return self._send(404, None, [{"code": 7000, "message": "No route for that URI"}])

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

            def do_PATCH(self):
                self._handle("PATCH")

            def do_DELETE(self):
                self._handle("DELETE")

        return Handler
