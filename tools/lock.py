"""Refresh ``requirements.lock`` and the serving image's pins from it: ``python tools/lock.py``.

The lock pins the whole dependency set of ncfctl with every extra (pip-compile, which resolves with
pip itself and so honours pip's configuration: on these machines that is the local CPU torch wheel,
where a resolver that ignores it would pick the multi-GB CUDA build). README's install command and
``.ci/run`` install with ``-c requirements.lock``, so an upstream release changes nothing until this
command is run and its diff committed.

The image installs only what ``container/requirements*.txt`` name; each ``name==version`` line there is
rewritten to the lock's version, so the image runs exactly what the tests ran. A container pin the
lock does not have is an error: every server dependency must also be a dependency of ncfctl.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
CONTAINER_REQUIREMENTS = sorted((ROOT / "container").glob("requirements*.txt"))
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==(\S+)")
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)(==\S+)?$")  # a container line: a name, pinned or not yet


def canonical(name: str) -> str:
    """PEP 503 name, so ``PyYAML``, ``pyyaml`` and ``py_yaml`` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line (comments and options skipped)."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def compile_lock() -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "piptools",
            "compile",
            "--quiet",
            "--upgrade",
            "--all-extras",
            "--strip-extras",
            "--no-emit-index-url",
            "--no-emit-find-links",
            "--output-file",
            LOCK.name,
            "pyproject.toml",
        ],
        cwd=ROOT,
        check=True,
        env={**os.environ, "CUSTOM_COMPILE_COMMAND": "python tools/lock.py"},
    )


def repin(path: Path, lock: dict[str, str]) -> None:
    """Pin each requirement in ``path`` (``name`` or ``name==old``) to the lock's version, keeping comments
    and order: a new server dependency is added to the file by name and pinned here."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = REQUIREMENT.match(line.strip())
        if match:
            name = canonical(match.group(1))
            if name not in lock:
                raise SystemExit(
                    f"{path.relative_to(ROOT)}: {match.group(1)} is not in requirements.lock; "
                    "add it to pyproject.toml (a dependency or an extra) first"
                )
            line = f"{match.group(1)}=={lock[name]}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    compile_lock()
    lock = read_pins(LOCK)
    for path in CONTAINER_REQUIREMENTS:
        repin(path, lock)
    print(
        f"requirements.lock: {len(lock)} pins; container pins refreshed in "
        + ", ".join(p.name for p in CONTAINER_REQUIREMENTS)
    )


if __name__ == "__main__":
    main()
