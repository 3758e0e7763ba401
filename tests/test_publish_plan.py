"""The publish plan (buildlib/publish/plan.py) on made-up inputs: no sshd,
nginx, gpg or rpm; each case one row of a table."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildlib.publish.channels import PublishError
from buildlib.publish.plan import (
    ChannelReport,
    Checked,
    PackageId,
    plan_channel,
    select_kept,
)
from buildlib.publish.repodata import Metadata, Published
from buildlib.publish.rpms import LocalRpm
from buildlib.publish.transport import Entry

DIST = Path("/dist")
MD_FILES = {"repomd.xml", "repomd.xml.asc", "mrpm-index.json", "aaa-primary.xml.zst"}


def rpm(version: str = "0.9.2", name: str = "ampere", header: str = "") -> LocalRpm:
    """A package of dist/ (its file is never read here)."""
    package = f"mistralrs-{name}"
    return LocalRpm(DIST / f"{package}-{version}-1.fc43.x86_64.rpm", package, "0", version, "1.fc43", "x86_64",
                    header or f"header-of-{package}-{version}")


def href(version: str = "0.9.2", name: str = "ampere") -> str:
    return rpm(version, name).path.name


def metadata(*published: LocalRpm) -> Metadata:
    """The channel's metadata listing these packages, each with its header digest in our index."""
    old = Metadata(files=set(MD_FILES))
    for r in published:
        old.packages[r.path.name] = Published(r.name, r.epoch, r.version, r.release, r.path.name, f"id-{r.path.name}")
        old.index[f"id-{r.path.name}"] = r.header_sha256
    return old


def listing(*names: str) -> dict[str, Entry]:
    return {"repodata": Entry(True, 0, 0), **{n: Entry(False, 1, 0) for n in names}}


def plan(published=(), dist=(), *, checked=None, retention=3, current=None, files=None, **extra):
    old = metadata(*published)
    on_host = files if files is not None else [r.path.name for r in published]
    return plan_channel(channel="stable", channel_name="stable", tag="publish[stable]", old=old,
                        had_metadata=bool(published), listing=listing(*on_host),
                        checked=checked or Checked(True, {}), rpms=list(dist), retention=retention,
                        current=current, **extra)


def names(rpms) -> list[str]:
    return [r.path.name for r in rpms]


# --- new, unchanged, refused -------------------------------------------------


@pytest.mark.parametrize("published,dist,new,unchanged,up_to_date", [
    ([], [rpm()], [href()], [], False),  # a first publish
    ([rpm("0.9.1")], [rpm("0.9.2")], [href("0.9.2")], [], False),  # a new version beside the old
    ([rpm()], [rpm()], [], [href()], True),  # same NEVR, same header: nothing to do
    ([rpm(name="ada")], [rpm(name="ada"), rpm()], [href()], [href(name="ada")], False),
])
def test_new_and_unchanged(published, dist, new, unchanged, up_to_date):
    p = plan(published, dist)
    assert (names(p.new), list(p.unchanged), p.up_to_date) == (new, unchanged, up_to_date)
    assert ChannelReport.of(p).added == new
    assert ChannelReport.of(p).metadata_rebuilt is not up_to_date


@pytest.mark.parametrize("published,dist", [
    ([rpm(header="one")], [rpm(header="two")]),
    ([rpm("0.9.1"), rpm(header="one")], [rpm(header="two")]),
])
def test_same_nevr_other_content_is_refused(published, dist):
    with pytest.raises(PublishError, match="already published in channel stable with other content"):
        plan(published, dist)


# --- retention ---------------------------------------------------------------


@pytest.mark.parametrize("published,dist,retention,kept,pruned", [
    # rpm's order, not the strings': 0.9.10 is newer than 0.9.9
    (["0.9.2", "0.9.9", "0.9.10"], ["0.9.11"], 3, ["0.9.10", "0.9.11", "0.9.9"], ["0.9.2"]),
    (["0.9.2", "0.9.9", "0.9.10"], [], 1, ["0.9.10"], ["0.9.2", "0.9.9"]),
    (["0.9.9", "0.9.10"], ["0.10.0"], 2, ["0.10.0", "0.9.10"], ["0.9.9"]),
    # a package older than the N kept is not worth adding, and is not "pruned" either
    (["0.9.9", "0.9.10"], ["0.9.1"], 2, ["0.9.10", "0.9.9"], []),
])
def test_retention_prunes_in_rpm_version_order(published, dist, retention, kept, pruned):
    p = plan([rpm(v) for v in published], [rpm(v) for v in dist], retention=retention)
    assert sorted(p.kept) == sorted(href(v) for v in kept)
    assert list(p.pruned) == sorted(href(v) for v in pruned)
    assert all(r.path.name in p.kept for r in p.new)


def test_retention_counts_per_name_by_typed_key():
    packages = {"a1": PackageId("x", "0:1-1"), "a2": PackageId("x", "0:2-1"), "b1": PackageId("y", "0:1-1")}
    assert select_kept(packages, 1) == (["a2", "b1"], ["a1"])


# --- repairs -----------------------------------------------------------------


@pytest.mark.parametrize("in_dist,new,kept,healed,note", [
    (True, [href("0.9.1")], [href("0.9.1"), href("0.9.2")], [href("0.9.1")], "uploading it again from dist/"),
    (False, [], [href("0.9.2")], [], "dropped from the metadata"),
])
def test_damaged_package_is_healed_from_dist_or_dropped(in_dist, new, kept, healed, note):
    published = [rpm("0.9.1"), rpm("0.9.2")]
    dist = [rpm("0.9.1"), rpm("0.9.2")] if in_dist else [rpm("0.9.2")]
    p = plan(published, dist, checked=Checked(True, {href("0.9.1"): "is missing"}))
    assert (names(p.new), sorted(p.kept), list(p.healed)) == (new, kept, healed)
    assert any(note in n and href("0.9.1") in n for n in p.notes), p.notes
    assert not p.up_to_date and p.forget_damaged
    assert ChannelReport.of(p).damaged == {href("0.9.1"): "is missing"}


def test_damaged_package_with_other_content_in_dist_is_refused():
    with pytest.raises(PublishError, match="never replaced by another: raise the release"):
        plan([rpm(header="one")], [rpm(header="two")], checked=Checked(True, {href(): "is missing"}))


def test_untrusted_metadata_is_made_afresh_from_the_good_packages():
    """Metadata the key did not sign: only what the key signed counts
    (checked.good), and the old metadata files clients may still fetch stay."""
    published = [rpm("0.9.1"), rpm("0.9.2"), rpm("0.9.3")]
    good = {href("0.9.1"): rpm("0.9.1"), href("0.9.3"): rpm("0.9.3")}
    checked = Checked(False, {href("0.9.2"): "fails the check against the repository's key (bad)"}, good)
    p = plan(published, [rpm("0.9.4")], checked=checked, md_horizon=100.0,
             md_mtimes={"repomd.xml": 50.0, "aaa-primary.xml.zst": 150.0, "not-ours": 200.0})
    assert not p.trusted and not p.up_to_date and not p.forget_damaged
    assert sorted(p.kept) == sorted(href(v) for v in ("0.9.1", "0.9.3", "0.9.4"))
    assert names(p.new) == [href("0.9.4")] and p.healed == ()
    assert p.retained_md == {"aaa-primary.xml.zst"}
    assert p.header_digests()[href("0.9.1")] == rpm("0.9.1").header_sha256


# --- strays, orphans, current records ----------------------------------------


@pytest.mark.parametrize("extra,stray,orphans", [
    ([], [], []),
    (["mistralrs-old-1-1.fc43.x86_64.rpm"], ["mistralrs-old-1-1.fc43.x86_64.rpm"], []),
    (["mistralrs-old-1-1.fc43.x86_64.cdx.json"], [], ["mistralrs-old-1-1.fc43.x86_64.cdx.json"]),
    (["mistralrs-old-1-1.fc43.x86_64.gate.json"], [], ["mistralrs-old-1-1.fc43.x86_64.gate.json"]),
    ([href().removesuffix(".rpm") + ".cdx.json"], [], []),  # the SBOM of a kept package stays
])
def test_stray_files_and_orphan_sboms_are_pruned(extra, stray, orphans):
    p = plan([rpm()], [rpm()], files=[href(), *extra])
    assert (list(p.stray), list(p.orphans)) == (stray, orphans)
    assert ChannelReport.of(p).pruned == stray


def test_sboms_of_pruned_packages_are_orphans():
    published = [rpm("0.9.1"), rpm("0.9.2")]
    sboms = [href(v).removesuffix(".rpm") + ".cdx.json" for v in ("0.9.1", "0.9.2")]
    p = plan(published, [rpm("0.9.2")], retention=1, files=[href("0.9.1"), href("0.9.2"), *sboms])
    assert list(p.pruned) == [href("0.9.1")] and list(p.orphans) == [sboms[0]]
    assert p.stays() == {href("0.9.2"): "mistralrs-ampere"}


@pytest.mark.parametrize("current,published,new,left_out", [
    (None, [], [href("0.9.2")], False),  # no rpm record at all (CI): every package counts
    (frozenset({href("0.9.2")}), [], [href("0.9.2")], False),
    (frozenset({href("0.9.3")}), [], [], True),  # an earlier or abandoned build
    (frozenset({href("0.9.3")}), [rpm("0.9.2")], [], False),  # published already: unchanged, not new
])
def test_a_package_no_current_record_names_is_left_out(current, published, new, left_out):
    p = plan(published, [rpm("0.9.2")], current=current)
    assert names(p.new) == new
    assert any("leaving out" in n for n in p.notes) is left_out


def test_the_channels_release_package_stays_unchanged():
    release = "mistralrs-release-2-1.fc43.noarch.rpm"
    p = plan([rpm()], [rpm()], release_href=release)
    assert list(p.unchanged) == [href(), release]
