"""The gate record: what ran, where and with what result, for one staged
package; `doit promote` believes a package only through it (the main
header's SHA-256, which signing leaves alone and which holds the payload's
digest)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from ..run import Refused

SCHEMA = 1


@dataclass(frozen=True)
class GateRecord:
    flavour: str
    channel: str
    nevra: str
    file: str
    header_sha256: str
    gpu: str
    compute_cap: str
    driver: str
    cuda: str
    smoke: str
    passed: bool
    steps: list[dict] = field(default_factory=list)
    started: str = ""
    finished: str = ""
    driver_from_host: bool = True
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> "GateRecord":
        try:
            data = json.loads(text)
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError) as e:
            raise Refused(f"{where}: not a gate record ({e})") from None

    def proven(self) -> str:
        """The index page's words: where and when it passed."""
        return f"tested on {self.gpu}, driver {self.driver}, {self.finished[:10]}"
