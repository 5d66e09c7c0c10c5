"""Build a Debian root filesystem with ``debootstrap``: the base layer of the Debian marketplace image.

The build runs on the host (as root) into a staging directory; :class:`shoal.runtime.marketplace.BaseProvider`
then imports the finished tree as a layer and deletes the staging copy. Everything here is synchronous and
reports through a ``(stage, fraction)`` callback: ``stage`` is a human-readable line (debootstrap's own
message while it runs) and ``fraction`` grows monotonically from 0 to 1 over the build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

Progress = Callable[[str, float], None]

DEFAULT_MIRROR = "http://deb.debian.org/debian"
# What Azure's first-party Linux images have beyond a minimal base, and what the seed's workflow needs: sudo
# (admin users), an SSH server (installed, not started unless asked), ps/top, ip, TLS roots, curl and Python.
PACKAGES = ("sudo", "openssh-server", "procps", "iproute2", "ca-certificates", "curl", "python3")
# minbase bookworm with PACKAGES pulls about 150; only used to pace the bar until the real count is known.
EXPECTED_PACKAGES = 150

# Share of the bar each debootstrap phase covers, proportional to the time each took in a measured build
# (24 s: metadata 5.6 s, downloads 11.5 s, extraction 3.3 s, unpacking 2.9 s, configuring 1.2 s).
_PHASES: dict[str, tuple[float, float]] = {
    "metadata": (0.0, 0.20),
    "retrieve": (0.20, 0.70),
    "extract": (0.70, 0.82),
    "unpack": (0.82, 0.95),
    "configure": (0.95, 1.00),
}
# Landmarks of the metadata phase (release file, package index, dependency resolution) -> position in it.
_METADATA_STEPS = (("I: Retrieving InRelease", 0.05), ("I: Retrieving Release", 0.05),
                   ("I: Retrieving Packages", 0.2), ("I: Validating Packages", 0.3),
                   ("I: Resolving dependencies of required", 0.35), ("I: Resolving dependencies of base", 0.65),
                   ("I: Checking component", 0.95))
# "I: Retrieving libacl1 2.3.1-3" (a package: name and version) but not "I: Retrieving InRelease".
_PACKAGE_STEP = re.compile(r"^I: (Retrieving|Validating) (\S+) (\S+)$")
_EXTRACT = re.compile(r"^I: Extracting (\S+?)\.\.\.$")
# One package per line ("I: Unpacking libc6:amd64..."); the multi-word phase headers such as
# "I: Unpacking required packages..." or "I: Configuring the base system..." do not match.
_UNPACK = re.compile(r"^I: Unpacking (\S+?)\.\.\.$")
_CONFIGURE = re.compile(r"^I: Configuring (\S+?)\.\.\.$")
# Messages debootstrap (and wget below it) print when the mirror cannot be reached or served the wrong thing.
_MIRROR_FAILURES = ("Failed getting release file", "Couldn't download", "Failed getting", "Connection refused",
                    "unable to resolve host", "Temporary failure in name resolution", "Couldn't find these debs",
                    "Invalid Release file", "Network is unreachable")

RESOLV_CONF_PLACEHOLDER = (
    "# Placeholder written by Shoal's image build. When a machine starts, Shoal bind-mounts the host's\n"
    "# /etc/resolv.conf over this file (read-only), so name resolution follows the host. The build host's\n"
    "# own resolver settings are deliberately not baked into the image.\n"
)


class DebootstrapError(RuntimeError):
    """The build could not run or failed; the message says what to do next."""


class PhaseTracker:
    """Turns debootstrap's ``I:`` lines into a monotonic overall fraction.

    debootstrap never prints a package count up front, so retrieval is paced against EXPECTED_PACKAGES until
    extraction starts; from then on the number of retrieved packages is the real total for the later phases.
    """

    def __init__(self, expected_packages: int = EXPECTED_PACKAGES) -> None:
        self.expected = expected_packages
        self.retrieved: set[str] = set()
        self.validated: set[str] = set()
        self.extracted = 0
        self.unpacked = 0
        self.configured = 0
        self.fraction = 0.0

    def _total(self) -> int:
        return max(len(self.retrieved), 1)

    def feed(self, line: str) -> float:
        """Account for one output line and return the overall fraction so far (0..1)."""
        value: float | None = None
        step = next((at for prefix, at in _METADATA_STEPS if line.startswith(prefix)), None)
        if step is not None:
            value = self._at("metadata", step)
        elif m := _PACKAGE_STEP.match(line):
            (self.retrieved if m.group(1) == "Retrieving" else self.validated).add(m.group(2))
            pace = max(self.expected, len(self.retrieved) + 1)
            value = self._at("retrieve", (len(self.retrieved) + len(self.validated)) / (2 * pace))
        elif _EXTRACT.match(line):
            self.extracted += 1
            value = self._at("extract", self.extracted / self._total())
        elif _UNPACK.match(line):
            self.unpacked += 1
            value = self._at("unpack", self.unpacked / self._total())
        elif _CONFIGURE.match(line):
            self.configured += 1
            value = self._at("configure", self.configured / self._total())
        elif line.startswith("I: Base system installed successfully"):
            value = 1.0
        if value is not None:
            self.fraction = max(self.fraction, min(value, 1.0))
        return self.fraction

    @staticmethod
    def _at(phase: str, within: float) -> float:
        start, end = _PHASES[phase]
        return start + (end - start) * min(max(within, 0.0), 1.0)


def find_debootstrap() -> str | None:
    """The debootstrap binary, also when /usr/sbin is not on PATH (non-login root shells, services)."""
    found = shutil.which("debootstrap")
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        candidate = Path(folder) / "debootstrap"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ensure_debootstrap(progress: Progress | None = None) -> str:
    """Return the debootstrap binary, installing the Debian package with apt-get when it is missing.

    ``apt-get update`` runs only if the first install attempt fails: on a machine with fresh package lists
    it is pure waste, on a fresh container it is what makes the install work.
    """
    found = find_debootstrap()
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise DebootstrapError(
            "debootstrap is not installed and there is no apt-get to install it. Install your distribution's "
            "debootstrap package, or give the image a 'tarball:<rootfs.tar>' source in the catalog file.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    report = progress or (lambda _stage, _fraction: None)
    report("Installing debootstrap (apt-get install -y debootstrap)", 0.0)
    install = [apt, "install", "-y", "debootstrap"]
    first = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if first.returncode != 0:
        report("Refreshing package lists (apt-get update)", 0.0)
        update = subprocess.run([apt, "update"], env=env, capture_output=True, text=True, check=False)
        second = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if second.returncode != 0:
            tail = _tail((update.stdout + update.stderr + second.stdout + second.stderr).splitlines(), 12)
            raise DebootstrapError(
                "Could not install debootstrap with apt-get (is this root, and are the Debian package "
                f"repositories reachable?). Install it by hand with `apt-get install debootstrap`.\n{tail}")
    found = find_debootstrap()
    if found is None:
        raise DebootstrapError("apt-get installed debootstrap but the binary is not in /usr/sbin or on PATH.")
    return found


def check_mirror(mirror: str, suite: str, *, timeout: float = 20.0) -> None:
    """Fail fast, with advice, when the mirror cannot serve the suite (debootstrap's own error is cryptic)."""
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise DebootstrapError(
                f"The Debian mirror {mirror} has no suite '{suite}' ({url} answered 404). Check the suite name "
                "in the image's 'debootstrap:<suite>' source, or point at a mirror that carries it.") from exc
        raise DebootstrapError(_unreachable(mirror, url, f"HTTP {exc.code}")) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DebootstrapError(_unreachable(mirror, url, str(reason))) from exc


def _unreachable(mirror: str, url: str, reason: str) -> str:
    return (f"Cannot reach the Debian mirror {mirror} ({url}: {reason}). Building the Debian base image needs "
            "HTTP access to a Debian mirror. Check the network and any proxy (http_proxy is honoured), use a "
            "reachable mirror (shoal marketplace pull --debian-mirror URL, or SHOAL_DEBIAN_MIRROR), or give the "
            "image a 'tarball:<rootfs.tar>' source built elsewhere (the catalog file's 'source' field).")


def build_rootfs(target: Path, *, suite: str = "bookworm", mirror: str = DEFAULT_MIRROR, variant: str = "minbase",
                 progress: Progress | None = None, log_file: Path | None = None,
                 packages: tuple[str, ...] = PACKAGES) -> None:
    """Run ``debootstrap --variant=<variant> --include=<packages> <suite> <target> <mirror>``, then make the tree
    image-ready.

    ``target`` must not exist or be empty. Output lines are streamed to ``progress`` (and appended to
    ``log_file``). On failure the partial tree is left for the caller to delete.
    """
    report = progress or (lambda _stage, _fraction: None)
    if os.geteuid() != 0:
        raise DebootstrapError("debootstrap must run as root (it creates device nodes and chroots). Run the "
                               "build as root, or give the image a 'tarball:<rootfs.tar>' source.")
    report(f"Checking the mirror {mirror}", 0.0)
    check_mirror(mirror, suite)
    binary = ensure_debootstrap(report)
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise DebootstrapError(f"The build directory {target} is not empty.")
    argv = [binary, f"--variant={variant}", *([f"--include={','.join(packages)}"] if packages else []), suite,
            str(target), mirror]
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    tracker = PhaseTracker()
    recent: deque[str] = deque(maxlen=40)
    report(" ".join(["debootstrap", *argv[1:]]), 0.0)
    log: TextIO | None = open(log_file, "a", encoding="utf-8") if log_file else None  # noqa: SIM115
    try:
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=env, text=True, errors="replace", bufsize=1) as proc:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                if not line.strip():
                    continue
                recent.append(line)
                if log:
                    log.write(line + "\n")
                fraction = tracker.feed(line)
                report(line[3:] if line[:3] in ("I: ", "W: ", "E: ") else line, fraction)
            code = proc.wait()
    finally:
        if log:
            log.close()
    if code != 0:
        raise _failure(code, list(recent), target, mirror, log_file)
    report("Removing apt caches and package lists", 1.0)
    finalize_rootfs(target)


def _failure(code: int, recent: list[str], target: Path, mirror: str, log_file: Path | None) -> DebootstrapError:
    # debootstrap keeps the detailed log inside the target when it fails; its tail usually names the culprit.
    inner = target / "debootstrap" / "debootstrap.log"
    detail = recent
    if inner.is_file():
        detail = [*recent, "-- debootstrap.log --", *inner.read_text(errors="replace").splitlines()[-15:]]
    text = _tail(detail, 25)
    where = f" Full output: {log_file}." if log_file else ""
    if any(marker.lower() in text.lower() for marker in _MIRROR_FAILURES):
        return DebootstrapError(_unreachable(mirror, mirror, f"debootstrap exited with {code}") + where + "\n" + text)
    return DebootstrapError(f"debootstrap failed (exit code {code}).{where}\n{text}")


def _tail(lines: list[str], count: int) -> str:
    return "\n".join(f"  {line}" for line in lines[-count:])


def finalize_rootfs(root: Path) -> None:
    """Make a fresh debootstrap tree fit to be a shared, immutable base layer.

    - downloaded .debs (~31 MB) and apt lists (~49 MB) are dropped: every machine would carry them, and stale
      lists are useless anyway (``apt-get update`` inside a machine fetches fresh ones);
    - debootstrap copies the build host's /etc/resolv.conf and /etc/hostname into the tree; both are host
      specifics. resolv.conf becomes a regular placeholder file (a regular file, not a symlink, because
      machines bind-mount the host's file onto it) and hostname becomes "localhost" (machines set their own
      hostname in their UTS namespace).
    """
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        _empty_dir(root / cache, keep={"partial", "lock"})
    for pattern in ("var/cache/apt/*.bin",):
        for path in root.glob(pattern):
            path.unlink()
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    _replace_file(etc / "resolv.conf", RESOLV_CONF_PLACEHOLDER)
    _replace_file(etc / "hostname", "localhost\n")
    if not (etc / "hosts").exists():
        _replace_file(etc / "hosts", "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")


def _empty_dir(folder: Path, *, keep: set[str]) -> None:
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _replace_file(path: Path, text: str) -> None:
    if path.is_symlink() or path.exists():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
