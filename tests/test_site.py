"""The index page: rendered from the published packages, served by the
repository's own nginx site, and read back from headless Chromium's DOM."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

from buildlib import config
from buildlib.publish import channels, site
from buildlib.run import UserError
from pipeline import project_config
from test_setup import needs_nginx, needs_openssl, sample_tree, serve_site, spki_hash

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
FINGERPRINT = "A6B285F6E577AC383C6BFE37FE9CBC6F81D9CBE6"
PUBLISHED = {
    "stable": [
        "mistralrs-ampere-0.9.1-1.fc43.x86_64.rpm",
        "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm",
        "mistralrs-ampere-0.9.10-1.fc43.x86_64.rpm",
        "mistralrs-hopper-0.9.2-2.fc43.x86_64.rpm",
        "mistralrs-ada-0.10.0~rc1-1.fc43.x86_64.rpm",
        "mistralrs-release-1-1.fc43.noarch.rpm",
    ],
    "unstable": ["mistralrs-ampere-0.9.2^20260101.3gitabc1234-1.fc43.x86_64.rpm"],
}


def site_config(tmp: Path) -> config.Config:
    data = project_config()
    data["publish"]["target"] = str(tmp / "srv")
    data["publish"]["base_url"] = "https://localhost/mistralrs-rpm"
    return config.parse(data, tmp / "config.toml")


class _Text(HTMLParser):
    """Visible text and <pre> blocks of an HTML document."""

    def __init__(self):
        super().__init__()
        self.text: list[str] = []
        self.pre: list[str] = []
        self._in_pre = 0
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag == "pre":
            self._in_pre += 1
            self.pre.append("")
        if tag in ("script", "style", "head"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_pre -= 1
        if tag in ("script", "style", "head"):
            self._skip -= 1

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._in_pre:
            self.pre[-1] += data


def parse(document: str) -> _Text:
    p = _Text()
    p.feed(document)
    return p


def test_index_lists_flavours_versions_channels_and_key(tmp_path):
    cfg = site_config(tmp_path)
    when = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)
    index, style = site.render_index(cfg, tmp_path / "out", PUBLISHED, FINGERPRINT, when)
    assert style.read_text() == site.STYLESHEET.read_text()
    doc = parse(index.read_text())
    text = " ".join("".join(doc.text).split())
    for flavour in cfg.flavours:
        assert f"sudo dnf install mistralrs-{flavour.name}" in doc.pre
        for gpu in flavour.gpus:
            assert gpu in text
    assert "compute capability 12.0" in text and "compute capability 8.6" in text
    # newest first, in rpm's order (0.9.10 after 0.9.2 by version, not by text)
    # each version says whether it ran on hardware (issue 20): none of these passed a gate
    assert ("0.9.10-1.fc43 SBOM (not tested on hardware), 0.9.2-1.fc43 SBOM (not tested on hardware),"
            " 0.9.1-1.fc43 SBOM (not tested on hardware)") in text
    assert "0.10.0~rc1-1.fc43" in text
    assert "0.9.2^20260101.3gitabc1234-1.fc43" in text
    assert "A6B2 85F6 E577 AC38 3C6B FE37 FE9C BC6F 81D9 CBE6" in text
    assert "2026-03-01 12:30 UTC" in text
    assert ("sudo dnf install https://localhost/mistralrs-rpm/fedora/43/x86_64/mistralrs-release-1-1.fc43.noarch.rpm"
            in doc.pre)
    assert "sudo dnf config-manager addrepo --from-repofile=https://localhost/mistralrs-rpm/mistralrs.repo" in doc.pre
    assert "sudo dnf install --enablerepo=mistralrs-unstable mistralrs-ampere" in doc.pre
    assert "<script" not in index.read_text()


def test_each_version_links_its_sbom_beside_the_package(tmp_path):
    cfg = site_config(tmp_path)
    index, _ = site.render_index(cfg, tmp_path, PUBLISHED, FINGERPRINT)
    page = index.read_text()
    base = "https://localhost/mistralrs-rpm/fedora/43/x86_64"
    shown = re.findall(r'<span class="v">([^<]+)</span>', page)
    links = re.findall(r'<span class="v">([^<]+)</span> <a class="sbom" href="([^"]+)"', page)
    assert len(links) == len(shown) == 6  # every flavour package, not mistralrs-release
    assert ("0.9.10-1.fc43", f"{base}/mistralrs-ampere-0.9.10-1.fc43.x86_64.cdx.json") in links
    assert ("0.10.0~rc1-1.fc43", f"{base}/mistralrs-ada-0.10.0~rc1-1.fc43.x86_64.cdx.json") in links
    assert ("0.9.2^20260101.3gitabc1234-1.fc43",
            f"{base}/unstable/mistralrs-ampere-0.9.2^20260101.3gitabc1234-1.fc43.x86_64.cdx.json") in links


def test_index_before_anything_is_published(tmp_path):
    cfg = site_config(tmp_path)
    index, _ = site.render_index(cfg, tmp_path, {}, FINGERPRINT)
    doc = parse(index.read_text())
    assert "none yet" in " ".join(doc.text)
    assert not any("mistralrs-release" in p for p in doc.pre)
    with pytest.raises(UserError, match="fingerprint"):
        site.render_index(cfg, tmp_path, {}, "not a fingerprint")
    with pytest.raises(UserError, match="RPM file name"):
        site.render_index(cfg, tmp_path, {"stable": ["garbage.txt"]}, FINGERPRINT)


def test_index_commands_match_the_repo_file(tmp_path):
    """The page and mistralrs.repo name the channels and the key alike (channels.repo_id, one gpgkey URL)."""
    cfg = site_config(tmp_path)
    index, _ = site.render_index(cfg, tmp_path, PUBLISHED, FINGERPRINT)
    page = index.read_text()
    doc = parse(page)
    repo_file = channels.render_repo_file(cfg)
    sections = re.findall(r"(?m)^\[(.+)\]$", repo_file)
    assert sections == [channels.repo_id(c.name) for c in cfg.channels]
    enabled = {p.split("--enablerepo=")[1].split()[0] for p in doc.pre if "--enablerepo=" in p}
    assert enabled == set(sections) - {channels.repo_id("stable")}
    key_url = f"{cfg.publish.base_url}/RPM-GPG-KEY-mistralrs"
    assert f'href="{key_url}"' in page and f"gpgkey={key_url}\n" in repo_file


def test_index_escapes_what_it_shows(tmp_path):
    data = project_config()
    data["publish"]["target"] = str(tmp_path / "srv")
    data["flavours"]["ampere"]["gpus"] = ["<b>RTX</b> & co"]
    cfg = config.parse(data, tmp_path / "config.toml")
    index, _ = site.render_index(cfg, tmp_path, {}, FINGERPRINT)
    assert "&lt;b&gt;RTX&lt;/b&gt; &amp; co" in index.read_text()


def chromium(*args: str, profile: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.mark.services
@needs_nginx
@needs_openssl
@needs_chromium
def test_index_served_by_nginx_renders_in_chromium(tmp_path):
    cfg = site_config(tmp_path)
    root = sample_tree(tmp_path / "srv")
    site.render_index(cfg, root, PUBLISHED, FINGERPRINT)
    shots = Path(__file__).resolve().parent.parent / "build" / "test-screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with serve_site(tmp_path, root) as srv:
        # trust exactly the test certificate's key, nothing else
        pin = f"--ignore-certificate-errors-spki-list={spki_hash(srv.cert)}"
        url = f"{srv.https}/"
        dom = chromium(pin, "--dump-dom", url, profile=tmp_path / "profile-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        for name, size in (("phone", "390,844"), ("desktop", "1280,1000")):
            png = shots / f"index-{name}.png"
            png.unlink(missing_ok=True)
            proc = chromium(pin, f"--screenshot={png}", f"--window-size={size}", url,
                            profile=tmp_path / f"profile-{name}")
            assert proc.returncode == 0 and png.exists(), proc.stderr[-2000:]
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        log = (srv.prefix / "access.log").read_text()

    rendered = dom.stdout
    # the page Chromium built, not the template: the stylesheet was fetched and
    # the DOM holds every flavour and every install command
    assert '<html lang="en"><head>' in rendered
    assert re.search(r'GET /mistralrs-rpm/style\.css HTTP/1\.1" 200', log)
    doc = parse(rendered)
    text = html.unescape(" ".join("".join(doc.text).split()))
    for flavour in cfg.flavours:
        assert f'id="flavour-{flavour.name}"' in rendered
        assert f"sudo dnf install mistralrs-{flavour.name}" in doc.pre
        assert all(gpu in text for gpu in flavour.gpus)
    assert "mistralrs-flavour" in doc.pre
    assert any(p.startswith("sudo dnf install https://localhost/mistralrs-rpm/") for p in doc.pre)
    assert "sudo dnf install --enablerepo=mistralrs-unstable mistralrs-ampere" in doc.pre
    assert "A6B2 85F6 E577 AC38" in text
