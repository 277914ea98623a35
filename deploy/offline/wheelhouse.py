"""Fill a wheelhouse for the image's Python, not this host's.

`pip wheel` resolves with the markers of the interpreter that runs it, and the image's Python is
Debian's (3.11.2 on bookworm), so a host on 3.11.7 would leave out what only older patch releases
need (redis wants async-timeout below 3.11.3). This resolves with pip on the host, then walks every
wheel's requirements under the image's marker environment (read from the base image's python3) and
adds what is missing, until nothing is.

    python deploy/offline/wheelhouse.py WHEELHOUSE MARKERS.json REQUIREMENT... [--no-deps REQUIREMENT...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

# What the image's python3 prints: its marker environment (PEP 508), with the standard library only.
MARKERS_SCRIPT = """
import json, os, platform, sys
print(json.dumps({
    "implementation_name": sys.implementation.name,
    "implementation_version": platform.python_version(),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}))
"""


def pip_wheel(wheels: Path, requirements: list[str], *flags: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), *flags, *requirements], check=True
    )


def requires(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = HeaderParser().parsestr(archive.read(name).decode())
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def missing(wheels: Path, roots: list[Requirement], environment: dict[str, str]) -> list[Requirement]:
    """Requirements the image's Python needs that no wheel in `wheels` provides."""
    present = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in wheels.glob("*.whl")}
    wanted: dict[str, set[str]] = {}  # package → extras asked for
    frontier = [(r, "") for r in roots]
    absent: list[Requirement] = []
    while frontier:
        requirement, extra = frontier.pop()
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in wanted and extras <= wanted[name]:
            continue
        wanted.setdefault(name, set()).update(extras)
        if name not in present:
            absent.append(requirement)
            continue
        for child in requires(present[name]):
            frontier += [(child, e) for e in ["", *sorted(wanted[name])]]
    return absent


def main(argv: list[str]) -> None:
    wheels, markers, *rest = argv
    no_deps = rest[rest.index("--no-deps") + 1 :] if "--no-deps" in rest else []
    resolved = rest[: rest.index("--no-deps")] if "--no-deps" in rest else rest
    environment = json.loads(Path(markers).read_text())
    directory = Path(wheels)
    pip_wheel(directory, resolved)
    if no_deps:
        pip_wheel(directory, no_deps, "--no-deps")
    roots = [Requirement(r) for r in resolved]
    for _ in range(10):
        absent = missing(directory, roots, environment)
        if not absent:
            return
        print("for the image's Python:", ", ".join(map(str, absent)), file=sys.stderr)
        pip_wheel(directory, [f"{r.name}{r.specifier}" for r in absent])
    raise SystemExit("the wheelhouse does not close under the image's markers")


if __name__ == "__main__":
    main(sys.argv[1:])
