"""rpm macros and line breaks in the values that reach a spec.

The configuration refuses them when it loads (tests/test_config.py); these
tests take that layer away (dataclasses.replace past the loader) and show
that the renderer alone keeps them inert: a ``%(...)`` or ``%{lua:...}`` in
any value of either spec (mistralrs-release's, a flavour's) reaches the
package as text when the real rpmbuild builds it and runs nothing, and a
line break is refused before rpmbuild starts.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from buildlib import config
from buildlib.host import release_package
from buildlib.pipeline.rpmbuild import build_rpm
from buildlib.pipeline import spec
from buildlib.pipeline.spec import render_spec
from buildlib.run import UserError
from buildlib.templates import SpecLines, spec_value
from test_package import fabricate, make_project
from test_release_package import make_cfg

FINGERPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"
CREATED = 1764000000


def payloads(marker: Path) -> list[str]:
    """Each creates marker if rpm expands it; no spaces (the URL tag takes one word)."""
    return ["%(touch${IFS}" + str(marker) + ")", '%{lua:io.open("' + str(marker) + '","w")}',
            "%%%(touch${IFS}" + str(marker) + ")"]


def rpm_query(rpm: Path, fmt: str) -> str:
    return subprocess.run(["rpm", "-qp", "--qf", fmt, str(rpm)], check=True, capture_output=True, text=True).stdout


def scripts(rpm: Path) -> str:
    return subprocess.run(["rpm", "-qp", "--scripts", str(rpm)], check=True, capture_output=True, text=True).stdout


# --- mistralrs-release --------------------------------------------------------------


def release_cfg(tmp: Path, *, base_url: str | None = None, packager: str | None = None,
                channel: str | None = None) -> config.Config:
    cfg = make_cfg(tmp)
    publish = dataclasses.replace(cfg.publish, base_url=base_url or cfg.publish.base_url)
    package = dataclasses.replace(cfg.package, packager=packager or cfg.package.packager)
    channels = cfg.channels + ((config.Channel(name=channel, subdir="extra"),) if channel else ())
    return dataclasses.replace(cfg, publish=publish, package=package, channels=channels)


def build_release(tmp: Path, cfg: config.Config) -> Path:
    """rpmbuild of the rendered mistralrs-release spec (sources are stand-ins)."""
    top = tmp / "top"
    sources = top / "SOURCES"
    sources.mkdir(parents=True)
    for name in ("mistralrs.repo", "RPM-GPG-KEY-mistralrs", "mistralrs-flavour", "LICENSE"):
        (sources / name).write_text("stand-in\n")
    spec = top / "mistralrs-release.spec"
    spec.write_text(release_package.render_spec(cfg, cfg.host.release_package_version, FINGERPRINT, CREATED))
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", "--define", f"_sourcedir {sources}",
                    "--define", "dist .fc43", str(spec)], check=True, capture_output=True, timeout=120)
    (rpm,) = (top / "RPMS" / "noarch").glob("*.rpm")
    return rpm


@pytest.mark.parametrize("where", ["base_url", "packager", "channel"])
def test_macros_in_release_spec_values_do_not_run(tmp_path, where):
    marker = tmp_path / "pwned"
    for i, payload in enumerate(payloads(marker)):
        value = {"base_url": f"https://repo.example.org/{payload}", "packager": f"Eve {payload} <eve@example.org>",
                 "channel": payload}[where]
        cfg = release_cfg(tmp_path / f"cfg{i}", **{where: value})
        rpm = build_release(tmp_path / f"build{i}", cfg)
        assert not marker.exists(), f"{payload} ran during rpmbuild"
        assert scripts(rpm) == ""
        text = rpm_query(rpm, "%{URL}\\n%{DESCRIPTION}\\n") + subprocess.run(
            ["rpm", "-qp", "--changelog", str(rpm)], check=True, capture_output=True, text=True).stdout
        assert payload in text, text


@pytest.mark.parametrize("where", ["base_url", "packager", "channel"])
def test_line_breaks_in_release_spec_values_are_refused(tmp_path, where):
    marker = tmp_path / "pwned"
    attack = f"\n%post\ntouch {marker}\n"
    value = {"base_url": f"https://repo.example.org/x{attack}", "packager": f"Eve <eve@example.org>{attack}",
             "channel": f"extra{attack}"}[where]
    cfg = release_cfg(tmp_path, **{where: value})
    with pytest.raises(UserError, match="line break"):
        build_release(tmp_path / "build", cfg)
    assert not (tmp_path / "build" / "top" / "RPMS").exists() and not marker.exists()


# --- a flavour's package ------------------------------------------------------------


def flavour_cfg(cfg: config.Config, **changes) -> config.Config:
    gpus = changes.pop("gpus", None)
    package = dataclasses.replace(cfg.package, **changes)
    flavours = tuple(dataclasses.replace(f, gpus=gpus) if gpus and f.name == "ampere" else f for f in cfg.flavours)
    return dataclasses.replace(cfg, package=package, flavours=flavours)


@pytest.fixture
def project(tmp_path, pkg_libs):
    cfg, layout = make_project(tmp_path / "project")
    fabricate(layout, pkg_libs, "ampere", 86)
    return cfg, layout


@pytest.mark.parametrize("where", ["summary", "packager", "gpus"])
def test_macros_in_flavour_spec_values_do_not_run(request, project, where):
    cfg, layout = project
    # a short path: each GPU name stays shorter than a %description line, so
    # the wrapping never starts a line with one (the renderer refuses that)
    marker = Path(tempfile.mkdtemp(prefix="m", dir="/tmp")) / "p"
    request.addfinalizer(lambda: shutil.rmtree(marker.parent, ignore_errors=True))
    payload = " ".join(payloads(marker))
    value = {"summary": f"Fast {payload}", "packager": f"Eve {payload} <eve@example.org>",
             "gpus": ("RTX 3090", *(f"GPU{p}" for p in payloads(marker)))}[where]
    hostile = flavour_cfg(cfg, **{where: value})
    render_spec(hostile, layout, hostile.flavour("ampere"))
    rpm = build_rpm(hostile, layout, hostile.flavour("ampere"))
    assert not marker.exists(), f"{payload} ran during rpmbuild"
    assert "touch" not in scripts(rpm)
    text = rpm_query(rpm, "%{SUMMARY}\\n%{DESCRIPTION}\\n") + subprocess.run(
        ["rpm", "-qp", "--changelog", str(rpm)], check=True, capture_output=True, text=True).stdout
    for p in payloads(marker):
        assert p in text, text


@pytest.mark.parametrize("where", ["summary", "packager", "gpus", "url"])
def test_line_breaks_in_flavour_spec_values_are_refused(tmp_path, project, where):
    cfg, layout = project
    attack = f"\n%post\ntouch {tmp_path / 'pwned'}"
    value = {"summary": f"Fast{attack}", "packager": f"Eve <eve@example.org>{attack}", "gpus": ("RTX 3090", f"H100{attack}"),
             "url": f"https://example.org/{attack}"}[where]
    with pytest.raises(UserError):
        hostile = flavour_cfg(cfg, **{where: value})
        render_spec(hostile, layout, hostile.flavour("ampere"))
    assert not layout.spec("ampere").exists()


def test_a_description_line_never_starts_a_section():
    """rpm turns %% into % before it looks for a section name, so an escaped
    "%post" at the start of a %description line would still open one."""
    assert spec_value(SpecLines(["GPUs: H100,", "and more"])) == "GPUs: H100,\nand more"
    assert spec_value("100% %(x)") == "100%% %%(x)"
    for line in ("%post", "  %post -p /bin/sh", "%(touch x)"):
        with pytest.raises(UserError, match="must not start with '%'"):
            spec_value(SpecLines(["fine", line]))


# --- the License tag: computed, from the bundle record ---------------------------------


def bundle_license(monkeypatch, value: str) -> None:
    """The bundle record's license, past its loader's check (which refuses
    anything but a known SPDX expression)."""
    real = spec.BundleRecord.load

    def load(layout, flavour):
        record = real(layout, flavour)
        return dataclasses.replace(record, bundle=dataclasses.replace(record.bundle, license=value))

    monkeypatch.setattr(spec.BundleRecord, "load", load)


@pytest.mark.parametrize("value", ["MIT\n%post\ntouch /tmp/x", "MIT AND %(touch /tmp/x)",
                                   "MIT AND LicenseRef-%{lua:x}", "MIT  AND ISC", "MIT AND\tISC"])
def test_a_license_past_the_loader_is_refused_by_the_renderer(monkeypatch, project, value):
    cfg, layout = project
    bundle_license(monkeypatch, value)
    with pytest.raises(UserError, match="License"):
        render_spec(cfg, layout, cfg.flavour("ampere"))
    assert not layout.spec("ampere").exists()


def test_a_license_with_parentheses_reaches_the_spec_as_written(monkeypatch, project):
    cfg, layout = project
    value = "(Apache-2.0 OR MIT) AND Apache-2.0 WITH LLVM-exception AND (MIT OR Unicode-3.0)"
    bundle_license(monkeypatch, value)
    text = render_spec(cfg, layout, cfg.flavour("ampere")).read_text()
    assert f"\nLicense:        {value}\n" in text
