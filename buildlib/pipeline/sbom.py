"""A CycloneDX SBOM (JSON, spec 1.6) for one RPM.

Every linked crate with its purl (``pkg:cargo/NAME@VERSION``; git ones carry
the repository and commit as ``vcs_url``), version, license and, for
crates.io ones, the SHA-256 from Cargo.lock; the non-crate components
declared in config; the installed binary as a file component with its
SHA-256; and what the binary was built from and with (upstream tag and
commit, flavour, compute capability, features, toolchain versions) as
metadata properties.

The document is deterministic: its timestamp is the build's
SOURCE_DATE_EPOCH (the upstream commit's time) and its serial number a UUID
derived from everything it is made from, so the same inputs give the same
bytes.  :func:`validate` checks it against the CycloneDX JSON schema that
cyclonedx-python-lib ships.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..config import BundledComponent, Config, Flavour
from .bundled import Bundle, Crate
from .records import SHA256, BuildRecord, BundleRecord
from ..run import UserError, atomic_write

PROPERTY_PREFIX = "mistralrs-rpm"
SERIAL_NAMESPACE = uuid.UUID("6f0c1d52-3a41-5b7e-9b8e-2c1f6d0e4a90")
GITHUB = re.compile(r"^https://github\.com/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+?)(\.git)?/?\Z")


@dataclass(frozen=True)
class Subject:
    """The RPM the SBOM describes and what its binary was built from."""

    rpm_name: str
    rpm_version: str
    rpm_release: str
    arch: str
    upstream_url: str
    upstream_tag: str
    upstream_commit: str
    flavour: str
    compute_cap: int
    features: tuple[str, ...]
    toolchain: Mapping[str, str]  # e.g. {"rustc": "rustc 1.95.0 (...)", "nvcc": "..."}
    binary_path: str  # where the package installs it, e.g. /usr/bin/mistralrs
    binary_sha256: str
    source_date_epoch: int | None = None
    extra_properties: Mapping[str, str] = field(default_factory=dict)


def make(bundle: Bundle, subject: Subject) -> str:
    """The SBOM as JSON text."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.dependency import Dependency
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    if not SHA256.match(subject.binary_sha256):
        raise UserError(f"binary SHA-256 {subject.binary_sha256!r} is not 64 lowercase hex digits")

    rpm_purl = PackageURL(
        type="rpm",
        namespace="mistralrs-rpm",
        name=subject.rpm_name,
        version=f"{subject.rpm_version}-{subject.rpm_release}",
        qualifiers={"arch": subject.arch},
    )
    props = {
        "upstream:url": subject.upstream_url,
        "upstream:tag": subject.upstream_tag,
        "upstream:commit": subject.upstream_commit,
        "flavour": subject.flavour,
        "cuda:compute_cap": str(subject.compute_cap),
        "cargo:package": bundle.package,
        "cargo:features": ",".join(sorted(subject.features)),
        "binary:path": subject.binary_path,
        "binary:sha256": subject.binary_sha256,
        "license": bundle.license,
        **{f"toolchain:{name}": version for name, version in subject.toolchain.items()},
        **subject.extra_properties,
    }
    props = {k: v for k, v in props.items() if v}  # a snapshot has no tag
    root = Component(
        type=ComponentType.APPLICATION,
        name=subject.rpm_name,
        version=f"{subject.rpm_version}-{subject.rpm_release}",
        bom_ref=rpm_purl.to_string(),
        purl=rpm_purl,
        licenses=[_license(bundle.license)],
        properties=[Property(name=f"{PROPERTY_PREFIX}:{k}", value=v) for k, v in sorted(props.items())],
    )
    binary = Component(
        type=ComponentType.FILE,
        name=subject.binary_path,
        bom_ref=f"file:{subject.binary_path}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=subject.binary_sha256)],
    )
    crates = {c.key: _crate_component(c, subject) for c in bundle.crates}
    others = [_other_component(c) for c in bundle.components]

    timestamp = datetime.fromtimestamp(subject.source_date_epoch, timezone.utc) if subject.source_date_epoch is not None else None
    bom = Bom(
        components=[binary, *crates.values(), *others],
        metadata=BomMetaData(component=root, timestamp=timestamp),
        # derived from everything the document is made of, not random
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, _content_digest(bundle, subject)),
    )
    if timestamp is None:
        bom.metadata.timestamp = None
    # The graph: the package holds the binary; the binary is the packaged
    # crate plus the declared components; each crate links its dependencies.
    # Set in one go: Bom.register_dependency searches the list on every call,
    # quadratic in the number of crates (bench/bench_sbom.py).
    graph = {root: [binary], binary: [crates[bundle.root.key], *others]}
    graph.update((crates[key], [crates[d] for d in deps]) for key, deps in bundle.edges)
    for other in others:
        graph.setdefault(other, [])
    for deps in list(graph.values()):
        for dep in deps:
            graph.setdefault(dep, [])
    bom.dependencies = [Dependency(ref=c.bom_ref, dependencies=[Dependency(ref=d.bom_ref) for d in deps])
                        for c, deps in graph.items()]
    # Re-indent through json so that the file is stable and readable.
    return json.dumps(json.loads(JsonV1Dot6(bom).output_as_string()), indent=2, sort_keys=True) + "\n"


def _content_digest(bundle: Bundle, subject: Subject) -> str:
    """SHA-256 of everything an SBOM is made from (the serial number's seed)."""
    crates = [[c.name, c.version, c.source, c.license, c.checksum, c.workspace_member, c.license_from_config]
              for c in bundle.crates]
    components = [[c.name, c.version, c.license, c.url, c.commit] for c in bundle.components]
    subject_data = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in vars(subject).items()}
    data = [bundle.package, bundle.license, crates, components, [list(e) for e in bundle.edges], subject_data]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=list).encode()).hexdigest()


def _license(expression: str):
    """A single license as {"license": {"id": ...}}, anything else as an expression."""
    from cyclonedx.contrib.license.factories import LicenseFactory

    return LicenseFactory().make_from_string(expression)


def _crate_component(crate: Crate, subject: Subject):
    from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
    from cyclonedx.model.component import Component
    from packageurl import PackageURL

    qualifiers = {}
    refs = []
    if crate.git:
        qualifiers["vcs_url"] = f"git+{crate.git_url}@{crate.git_commit}"
        refs.append(ExternalReference(type=ExternalReferenceType.VCS, url=XsUri(f"{crate.git_url}#{crate.git_commit}")))
    elif crate.is_local:
        # A workspace member (or path dependency): built from upstream's tree.
        qualifiers["vcs_url"] = f"git+{subject.upstream_url}@{subject.upstream_commit}"
        refs.append(ExternalReference(type=ExternalReferenceType.VCS, url=XsUri(f"{subject.upstream_url}#{subject.upstream_commit}")))
    purl = PackageURL(type="cargo", name=crate.name, version=crate.version, qualifiers=qualifiers or None)
    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=crate.checksum)] if crate.checksum else []
    props = []
    if crate.license_from_config:
        props.append(Property(name=f"{PROPERTY_PREFIX}:license:source", value="config.toml crate_license (the crate declares only a license file)"))
    if crate.workspace_member:
        props.append(Property(name=f"{PROPERTY_PREFIX}:workspace-member", value="true"))
    return Component(
        name=crate.name,
        version=crate.version,
        bom_ref=_crate_ref(crate),
        purl=purl,
        hashes=hashes,
        licenses=[_license(crate.license)],
        external_references=refs,
        properties=props,
    )


def _crate_ref(crate: Crate) -> str:
    return f"crate:{crate.key}"


def _other_component(comp: BundledComponent):
    from cyclonedx.model import ExternalReference, ExternalReferenceType, XsUri
    from cyclonedx.model.component import Component
    from packageurl import PackageURL

    m = GITHUB.match(comp.url)
    if m:
        purl = PackageURL(type="github", namespace=m.group("owner"), name=m.group("repo"), version=comp.commit or comp.version)
    else:
        qualifiers = {"vcs_url": f"git+{comp.url}@{comp.commit}"} if comp.commit else {"download_url": comp.url}
        purl = PackageURL(type="generic", name=comp.name, version=comp.version, qualifiers=qualifiers)
    url = f"{comp.url}#{comp.commit}" if comp.commit else comp.url
    return Component(
        name=comp.name,
        version=comp.version,
        bom_ref=f"bundled:{comp.name}@{comp.version}",
        purl=purl,
        licenses=[_license(comp.license)],
        external_references=[ExternalReference(type=ExternalReferenceType.VCS, url=XsUri(url))],
    )


def without_credentials(url: str) -> str:
    """url with the user part of an http(s) address removed: a token there
    (https://TOKEN@host/...) must not be published.  ssh's user@host (no
    secret) and local paths are kept as written."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if parts.scheme in ("ssh", "git") and ":" in parts.netloc.rpartition("@")[0]:
        user, _, host = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}@{host}"))
    return url


def validate(text: str) -> None:
    """Raise a one-line UserError unless text is a valid CycloneDX 1.6 JSON BOM."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        data = getattr(error, "data", None)
        where = "/".join(str(p) for p in getattr(data, "absolute_path", [])) or "(top)"
        message = getattr(data, "message", str(error)).splitlines()[0]
        raise UserError(f"SBOM does not match the CycloneDX 1.6 schema at {where}: {message}")


def write(path: Path, bundle: Bundle, subject: Subject) -> str:
    """Make, validate and write the SBOM; returns its text."""
    text = make(bundle, subject)
    validate(text)
    atomic_write(path, text)
    return text


@functools.lru_cache(maxsize=8)  # the spec renderer asks for each release's SBOM more than once
def package_sbom(cfg: Config, flavour: Flavour, build: BuildRecord, bundle: BundleRecord, release: str) -> str:
    """The SBOM of mistralrs-<flavour> at Release ``release``, from
    the build record (tag, commit, flavour, compute capability, features,
    toolchain, the binary's SHA-256) and the bundle record.  The upstream URL
    is upstream.url, the repository actually fetched (package.url is only
    the project's home page), without any credentials it carries."""
    subject = Subject(
        rpm_name=flavour.package,
        rpm_version=build.rpm_version,
        rpm_release=f"{release}{cfg.package.dist}",
        arch="x86_64",
        upstream_url=without_credentials(cfg.upstream.url),
        upstream_tag=build.tag or "",
        upstream_commit=bundle.commit,
        flavour=flavour.name,
        compute_cap=build.compute_cap,
        features=tuple(build.features),
        toolchain={"rustc": build.rustc, "cargo": build.cargo, "nvcc": build.nvcc},
        binary_path=f"/usr/bin/{build.binary_name}",
        binary_sha256=build.sha256,
        source_date_epoch=bundle.source_date_epoch,
        extra_properties={"build:source": build.source, "build:rustflags": build.rustflags},
    )
    return make(bundle.bundle, subject)
