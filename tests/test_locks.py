"""The locks match their inputs: requirements.txt and requirements/dev.txt are what uv compiles
from requirements/main.in and requirements/dev.in, with the hashes of every distribution (pip and
uv then refuse a download whose bytes differ: `uv pip sync --require-hashes` in the Makefile,
`pip install --require-hashes` in the Dockerfile), and package-lock.json holds the Azurite of
package.json.

The Python check resolves against PyPI (uv takes a few seconds). It compiles into a copy of the
lock, so uv keeps every pin that still satisfies the inputs, as it does when a developer
re-locks: a release on PyPI alone never fails it, an input changed without re-locking does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(180)

PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;#]+)\s*(?:;\s*(?P<marker>[^#]+))?"
)


def pins(lock_text: str) -> dict[str, str]:
    """``name -> version[; marker]`` for every pinned line; headers, comments and ``# via`` ignored."""
    found = {}
    for line in lock_text.splitlines():
        if match := PIN.match(line):
            name = re.sub(r"[-_.]+", "-", match["name"]).lower()
            marker = (match["marker"] or "").strip()
            marker = marker.rstrip("\\").strip()
            found[name] = match["version"] + (f"; {marker}" if marker else "")
    return found


def uv() -> str:
    beside_python = Path(sys.executable).with_name("uv")
    found = str(beside_python) if beside_python.exists() else shutil.which("uv")
    assert found, "uv is missing: it is pinned in requirements/dev.in"
    return found


@pytest.mark.parametrize(
    ("source", "lock"),
    [("requirements/main.in", "requirements.txt"), ("requirements/dev.in", "requirements/dev.txt")],
)
def test_python_lock_matches_its_input(source, lock, tmp_path):
    command = f"uv pip compile --python-version 3.11 --generate-hashes {source} -o {lock}"
    committed = (ROOT / lock).read_text()
    assert f"#    {command}\n" in committed, f"{lock} was not made by `{command}`"

    recompiled = tmp_path / Path(lock).name
    recompiled.write_text(committed)
    result = subprocess.run(
        [
            uv(),
            "pip",
            "compile",
            "--quiet",
            "--python-version",
            "3.11",
            "--generate-hashes",
            source,
            "-o",
            str(recompiled),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"uv could not compile {source}:\n{result.stderr}"

    expected, actual = pins(recompiled.read_text()), pins(committed)
    assert expected, f"uv compiled no pin from {source}"
    drift = sorted(
        f"{name}: lock {actual.get(name, '-')}, input needs {expected.get(name, '-')}"
        for name in expected.keys() | actual.keys()
        if expected.get(name) != actual.get(name)
    )
    assert not drift, f"{lock} is stale; run `make lock` ({command}) and commit it:\n" + "\n".join(drift)


HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}(\s*\\)?$")


@pytest.mark.parametrize("lock", ["requirements.txt", "requirements/dev.txt"])
def test_every_pin_of_the_lock_carries_its_hashes(lock):
    """Each `name==version` line is followed by at least one sha256 hash, read as pip reads them."""
    lines = (ROOT / lock).read_text().splitlines()
    unhashed = []
    for number, line in enumerate(lines):
        if PIN.match(line):
            following = lines[number + 1] if number + 1 < len(lines) else ""
            if not line.rstrip().endswith("\\") or not HASH.match(following):
                unhashed.append(line.split()[0])
    assert pins((ROOT / lock).read_text()), f"{lock} pins nothing"
    assert not unhashed, f"{lock} pins without a hash (run `make lock`): {unhashed[:10]}"


def test_package_lock_pins_the_azurite_of_package_json():
    wanted = json.loads((ROOT / "package.json").read_text())["devDependencies"]["azurite"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", wanted), f"package.json must pin azurite exactly, not {wanted!r}"
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"][""]["devDependencies"]["azurite"] == wanted, "package-lock.json is stale: run npm install"
    assert lock["packages"]["node_modules/azurite"]["version"] == wanted, "package-lock.json is stale: run npm install"
