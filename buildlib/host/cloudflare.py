"""The repository's DNS records through Cloudflare's API (v4), with requests.

Only what the host set-up needs: find the zone, list a name's records of
one type, create one, update one.  :func:`ensure_record` makes the name
point at one address: a record already there is left alone, a record with
another address is updated in place, and a missing one is created, so that
running it again never makes a duplicate.

The token goes in an auth handler, not in ``headers=``: requests lets a
``~/.netrc`` entry replace an Authorization header given that way.  Every
request has a timeout.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


from ..run import UserError, log

API = "https://api.cloudflare.com/client/v4"
TIMEOUT_S = 30
RECORD_TYPES = {"A": 4, "AAAA": 6}


class CloudflareError(UserError):
    pass


class _Bearer:
    def __init__(self, token: str):
        self.token = token

    def __call__(self, r):
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


@dataclass(frozen=True)
class Record:
    id: str
    name: str
    type: str
    content: str
    proxied: bool
    ttl: int


class Cloudflare:
    def __init__(self, token: str, api: str = API, timeout: float = TIMEOUT_S):
        self.api = api.rstrip("/")
        self.timeout = timeout
        import requests  # here, not at the top: `doit` itself starts faster

        self.session = requests.Session()
        self.session.auth = _Bearer(token)
        self.session.headers["User-Agent"] = "mistralrs-rpm host set-up"

    def _call(self, method: str, path: str, **kwargs):
        import requests

        url = f"{self.api}{path}"
        try:
            r = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as e:
            raise CloudflareError(f"Cloudflare API {method} {path}: {type(e).__name__}: {e}") from None
        try:
            body = r.json()
        except (ValueError, RecursionError):  # not JSON, or nested past Python's recursion limit
            body = None
        if not isinstance(body, dict) or "success" not in body:
            raise CloudflareError(f"Cloudflare API {method} {path}: HTTP {r.status_code} with no API answer"
                                  f" ({r.text[:200]!r})")
        if not body["success"] or r.status_code >= 400:
            errors = body.get("errors") or []
            text = "; ".join(f"{e.get('message', '?')} (code {e.get('code', '?')})" for e in errors) or f"HTTP {r.status_code}"
            codes = {e.get("code") for e in errors}
            if r.status_code in (401, 403) or codes & {9103, 9106, 9109, 10000, 10001}:
                raise CloudflareError(
                    f"Cloudflare refused the API token: {text}. Check host.cloudflare_token_file"
                    " (or $CLOUDFLARE_API_TOKEN): the token needs Zone:Read and DNS:Edit on the zone"
                )
            raise CloudflareError(f"Cloudflare API {method} {path} failed: {text}")
        return body["result"]

    def zone_id(self, zone: str) -> str:
        result = self._call("GET", "/zones", params={"name": zone, "status": "active"})
        matches = [z for z in result or [] if z.get("name") == zone]
        if not matches:
            raise CloudflareError(
                f"Cloudflare has no active zone {zone!r} that this token can see;"
                " check host.cloudflare_zone and the token's zone resources"
            )
        return matches[0]["id"]

    def records(self, zone_id: str, name: str, rtype: str) -> list[Record]:
        result = self._call("GET", f"/zones/{zone_id}/dns_records",
                            params={"name": name, "type": rtype, "per_page": 100})
        return [Record(r["id"], r["name"], r["type"], r["content"], bool(r.get("proxied", False)), int(r.get("ttl", 1)))
                for r in result or [] if r.get("name") == name and r.get("type") == rtype]

    def create(self, zone_id: str, name: str, rtype: str, content: str, proxied: bool, ttl: int) -> Record:
        r = self._call("POST", f"/zones/{zone_id}/dns_records",
                       json={"type": rtype, "name": name, "content": content, "proxied": proxied, "ttl": ttl})
        return Record(r["id"], r["name"], r["type"], r["content"], bool(r.get("proxied")), int(r.get("ttl", ttl)))

    def update(self, zone_id: str, record_id: str, name: str, rtype: str, content: str, proxied: bool,
               ttl: int) -> Record:
        r = self._call("PUT", f"/zones/{zone_id}/dns_records/{record_id}",
                       json={"type": rtype, "name": name, "content": content, "proxied": proxied, "ttl": ttl})
        return Record(r["id"], r["name"], r["type"], r["content"], bool(r.get("proxied")), int(r.get("ttl", ttl)))


def ensure_record(cf: Cloudflare, zone: str, name: str, rtype: str, content: str, proxied: bool = False,
                  ttl: int = 1) -> str:
    """name has one rtype record with content; returns "created", "updated"
    or "unchanged".  ttl 1 is Cloudflare's "automatic"."""
    if rtype not in RECORD_TYPES:
        raise CloudflareError(f"record type {rtype!r}: only A and AAAA are managed here")
    try:
        address = ipaddress.ip_address(content)
    except ValueError:
        raise CloudflareError(f"{content!r} is not an IP address") from None
    if address.version != RECORD_TYPES[rtype]:
        raise CloudflareError(f"{content} is not an IPv{RECORD_TYPES[rtype]} address, as an {rtype} record needs")
    content = str(address)
    if name != zone and not name.endswith("." + zone):
        raise CloudflareError(f"{name} is not inside the zone {zone} (host.cloudflare_zone)")
    zone_id = cf.zone_id(zone)
    existing = cf.records(zone_id, name, rtype)
    same = [r for r in existing if _same_address(r.content, content)]
    if same:
        rec = same[0]
        if rec.proxied != proxied:
            cf.update(zone_id, rec.id, name, rtype, content, proxied, rec.ttl)
            action = "updated"
        else:
            action = "unchanged"
        others = [r.content for r in existing if r is not rec]
        if others:
            log(f"warning: {name} has other {rtype} records too ({', '.join(others)}); remove them if they are stale")
    elif len(existing) == 1:
        cf.update(zone_id, existing[0].id, name, rtype, content, proxied, existing[0].ttl)
        action = "updated"
    elif existing:
        raise CloudflareError(
            f"{name} has {len(existing)} {rtype} records ({', '.join(r.content for r in existing)}), none {content};"
            " not guessing which one to change: delete the stale ones in Cloudflare's dashboard and run again"
        )
    else:
        cf.create(zone_id, name, rtype, content, proxied, ttl)
        action = "created"
    log(f"{action}: DNS {rtype} {name} -> {content}")
    return action


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def ensure_host_records(cf: Cloudflare, zone: str, name: str, ipv4: str, ipv6: str) -> dict[str, str]:
    """The host's A and AAAA records (an empty address: that type is left alone)."""
    if not ipv4 and not ipv6:
        raise CloudflareError("no address to publish: set host.ipv4 and/or host.ipv6")
    done = {}
    for rtype, content in (("A", ipv4), ("AAAA", ipv6)):
        if content:
            done[rtype] = ensure_record(cf, zone, name, rtype, content)
    return done
