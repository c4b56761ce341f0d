"""tox's plugin file for this project (tox loads ``toxfile.py`` from the project root).

The matrix needs Python 3.10 to 3.13. pyenv keeps them under its root, but its shims answer only for
the versions ``pyenv global`` selects, and uv (tox-uv) stops at the first shim that fails rather
than look further. So before tox looks for interpreters, link each minor's newest pyenv build as
``.tox/pythons/python3.X`` and put that folder first on ``PATH``. Without pyenv nothing changes:
tox then finds the interpreters on ``PATH`` as usual, and a missing one fails its environments.

``python toxfile.py`` does the same and exits 1, naming them, when some Python is missing
(``.ci/run`` calls it before tox, so CI fails loudly and at once).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

MINORS = ("3.10", "3.11", "3.12", "3.13")
LINKS = Path(__file__).resolve().parent / ".tox" / "pythons"


def _pyenv_versions() -> Path | None:
    root = os.environ.get("PYENV_ROOT")
    if not root and shutil.which("pyenv"):
        found = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        root = found.stdout.strip() if found.returncode == 0 else None
    versions = Path(root) / "versions" if root else None
    return versions if versions is not None and versions.is_dir() else None


def _newest(versions: Path, minor: str) -> Path | None:
    """The newest CPython ``minor.N`` build pyenv has, as its ``bin/python3.X``."""
    builds = [p for p in versions.iterdir() if re.fullmatch(rf"{re.escape(minor)}\.\d+", p.name)]
    builds.sort(key=lambda p: int(p.name.rsplit(".", 1)[1]))
    for build in reversed(builds):
        if (build / "bin" / f"python{minor}").is_file():
            return build / "bin" / f"python{minor}"
    return None


def link_pyenv_pythons() -> None:
    """Link pyenv's Pythons into :data:`LINKS` and put it first on ``PATH`` (once)."""
    versions = _pyenv_versions()
    if versions is None:
        return
    LINKS.mkdir(parents=True, exist_ok=True)
    for minor in MINORS:
        target, link = _newest(versions, minor), LINKS / f"python{minor}"
        if link.is_symlink() or link.exists():
            link.unlink()
        if target is not None:
            link.symlink_to(target)
    path = os.environ.get("PATH", "")
    if str(LINKS) not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([str(LINKS), path])


def missing_pythons() -> list[str]:
    """The ``python3.X`` of :data:`MINORS` that cannot be run from ``PATH``."""
    missing = []
    for minor in MINORS:
        exe = shutil.which(f"python{minor}")
        ok = exe is not None and subprocess.run([exe, "-c", ""], capture_output=True,
                                                check=False).returncode == 0
        if not ok:
            missing.append(f"python{minor}")
    return missing


try:
    from tox.plugin import impl
except ImportError:  # run as a script, before tox is installed
    pass
else:
    from tox.config.sets import ConfigSet
    from tox.session.state import State

    @impl
    def tox_add_core_config(core_conf: ConfigSet, state: State) -> None:
        link_pyenv_pythons()


if __name__ == "__main__":
    link_pyenv_pythons()
    absent = missing_pythons()
    if absent:
        print(f"the test matrix needs Python 3.10 to 3.13; not found: {', '.join(absent)}",
              file=sys.stderr)
        sys.exit(1)
    print(f"Python {', '.join(MINORS)} found ({LINKS})")
