"""Another revision's `streamer` package, served beside this one in the same run.

A figure "within 10% of what it was" needs the earlier code measured in the same run, on
the same machine, under the same load: across runs a shared machine differs by more than
that. `export` writes the `streamer` package of a git revision into a scratch folder
(`git archive`); `servers.streamer(..., source=folder)` serves it with this interpreter
and its installed dependencies. The native encoder is copied in when its C source is the
same at that revision; otherwise that package uses its pure-Python encoder (txt
downloads do not use it).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The code before the per-request and saturation work (token cache, one-read bodies,
# probes in the protocol, fair turns): the parent of the commit that began it.
BEFORE = "170d2642c7f6683214aeb344dbd53451d749ba98"


class Unavailable(Exception):
    """The revision cannot be exported here (no git, a shallow clone, an unknown name)."""


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=False)


def export(revision: str, dest: Path) -> str:
    """Write `revision`'s streamer package under `dest`; return its full commit hash."""
    if shutil.which("git") is None:
        raise Unavailable("git is not installed")
    found = _git("rev-parse", "--verify", "--quiet", revision + "^{commit}")
    if found.returncode != 0:
        raise Unavailable(f"revision {revision} is not in this clone")
    commit = found.stdout.decode().strip()
    archive = _git("archive", "--format=tar", commit, "streamer")
    if archive.returncode != 0:
        raise Unavailable(archive.stderr.decode().strip() or "git archive failed")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    if _git("diff", "--quiet", commit, "--", "streamer/_speedups.c").returncode == 0:
        for built in (REPO / "streamer").glob("_speedups*.so"):
            shutil.copy2(built, dest / "streamer" / built.name)
    return commit
