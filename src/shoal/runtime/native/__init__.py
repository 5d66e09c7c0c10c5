"""The native machine helper (``shoal_machine.c``): found, or compiled on first use.

The helper ships as C source inside the package and is compiled into ``<store_dir>/bin/shoal-machine-<hash>``
the first time a namespace machine is needed. The file name carries a hash of the source, so an upgraded
package never runs a stale binary and several versions can share one store. It is linked statically when the
C library allows it: a static binary starts faster (no dynamic loader on every task) and does not depend on
anything inside a machine.

``SHOAL_MACHINE_HELPER`` may name a prebuilt binary instead (packagers, hosts without a compiler), and
``SHOAL_HELPER_CACHE_DIR`` a directory where builds are shared between stores (the tests use it).

Also here, the rest of the code that talks to the kernel or to the helper: ``hostbase`` (the masked host root
mount) and ``join`` (starting commands inside a machine).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path

SOURCE_NAME = "shoal_machine.c"
HEADERS = ("seccomp_profile.h",)  # included by the source; part of the helper's identity
_build_lock = threading.Lock()
_built: dict[Path, Path] = {}


class MachineError(RuntimeError):
    """A machine operation failed (bad spec, machine not running, mount refused...).

    Public as ``shoal.runtime.machines.MachineError``; defined here so the native glue can raise it too."""


class HelperUnavailable(MachineError):
    """The helper cannot be built here (no C compiler, or the build failed)."""


def source() -> bytes:
    return resources.files(__name__).joinpath(SOURCE_NAME).read_bytes()


def headers() -> dict[str, bytes]:
    return {name: resources.files(__name__).joinpath(name).read_bytes() for name in HEADERS}


def helper_name() -> str:
    digest = hashlib.sha256(source())
    for name, text in sorted(headers().items()):
        digest.update(name.encode() + b"\0" + text)
    return "shoal-machine-" + digest.hexdigest()[:16]


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def ensure_helper(bin_dir: Path) -> Path:
    """Path of a runnable helper, compiling it into ``bin_dir`` if this source was never built there."""
    override = os.environ.get("SHOAL_MACHINE_HELPER")
    if override:
        if not os.access(override, os.X_OK):
            raise HelperUnavailable(f"SHOAL_MACHINE_HELPER={override} is not an executable file")
        return Path(override)
    target = bin_dir / helper_name()
    if target in _built:
        return target
    with _build_lock:
        if os.access(target, os.X_OK):
            _built[target] = target
            return target
        bin_dir.mkdir(parents=True, exist_ok=True)
        # Other processes (a second server, a CLI) may build at the same moment: one builds, the others wait.
        with open(bin_dir / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.access(target, os.X_OK):
                # Built for another store by this process already: copying beats compiling (tests, CLIs).
                built = next((p for p in _built.values() if p.name == target.name and os.access(p, os.X_OK)), None)
                cache = Path(os.environ["SHOAL_HELPER_CACHE_DIR"]) / target.name \
                    if os.environ.get("SHOAL_HELPER_CACHE_DIR") else None
                if built is None and cache is not None and os.access(cache, os.X_OK):
                    built = cache  # compiled for another store of this host (tests: every server has its own)
                if built is not None:
                    tmp = target.with_name(f".{target.name}.{os.getpid()}")
                    shutil.copy2(built, tmp)
                    os.replace(tmp, target)
                else:
                    _compile(target)
                    if cache is not None:
                        cache.parent.mkdir(parents=True, exist_ok=True)
                        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
                        shutil.copy2(target, tmp)
                        os.replace(tmp, cache)
        _built[target] = target
        return target


def _compile(target: Path) -> None:
    cc = _compiler()
    if cc is None:
        raise HelperUnavailable("no C compiler found (install gcc, or set CC or SHOAL_MACHINE_HELPER)")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        src = Path(tmp) / SOURCE_NAME
        src.write_bytes(source())
        for name, text in headers().items():
            (Path(tmp) / name).write_bytes(text)
        out = Path(tmp) / "shoal-machine"
        errors = []
        for extra in (["-static"], []):  # static first; some C libraries ship no static archive
            cmd = [cc, "-O2", "-std=gnu11", "-s", *extra, "-o", str(out), str(src)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                os.chmod(out, 0o755)
                os.replace(out, target)  # atomic: nobody ever runs a half-written binary
                return
            errors.append(f"$ {' '.join(cmd)}\n{proc.stderr.strip()}")
        raise HelperUnavailable("cannot compile the machine helper:\n" + "\n".join(errors))
