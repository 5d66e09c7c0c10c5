"""Gallery replicas on a host: a flattened replica shows, over any base, exactly what the layer stack shows.

The kernel is the oracle: both the layer stack and the flattened replica are mounted as overlays over the same
base (in a private mount namespace) and the two trees are compared.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import scratch_root
from shoal.runtime.layers import OPAQUE_XATTR, LayerStore
from shoal.runtime.replicas import ReplicaError, ReplicaStore, flatten

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="whiteouts, trusted xattrs and overlay mounts need root (and unshare)")

_LISTING = r"""
import json, os, stat, sys
out = {}
root = sys.argv[1]
for dirpath, dirnames, filenames in os.walk(root):
    for name in sorted(dirnames + filenames):
        path = os.path.join(dirpath, name)
        st = os.lstat(path)
        rel = os.path.relpath(path, root)
        if stat.S_ISLNK(st.st_mode):
            what = ["link", os.readlink(path)]
        elif stat.S_ISREG(st.st_mode):
            what = ["file", open(path).read()]
        else:
            what = ["dir"]
        out[rel] = what + [oct(stat.S_IMODE(st.st_mode)), st.st_uid]
print(json.dumps(out, sort_keys=True))
"""


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="shoal-replicas-", dir=scratch_root()))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def tree(root: Path, spec: dict[str, str | None]) -> Path:
    """Files ("text"), directories (ending in "/"), whiteouts (None), opaque directories ("/opaque")."""
    root.mkdir(parents=True)
    for rel, value in spec.items():
        path = root / rel.rstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if value is None:
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
        elif value == "/opaque":
            path.mkdir(exist_ok=True)
            os.setxattr(path, OPAQUE_XATTR, b"y")
        elif value.startswith("->"):
            path.symlink_to(value[2:])
        elif rel.endswith("/"):
            path.mkdir(exist_ok=True)
            os.chmod(path, int(value or "755", 8))
        else:
            path.write_text(value)
    return root


def mounted_listing(work: Path, lowers_top_first: list[Path]) -> dict[str, list[object]]:
    """The tree an overlay of these lowers shows (read-only overlay, private mount namespace)."""
    target = Path(tempfile.mkdtemp(dir=work))
    script = (f"mount -t overlay overlay -o ro,lowerdir={':'.join(map(str, lowers_top_first))} {target} && "
              f"{sys.executable} -c \"$0\" {target}")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, _LISTING],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_a_flattened_stack_shows_what_the_layer_stack_shows_over_the_base(work: Path) -> None:
    base = tree(work / "base", {"a/x": "base-x", "a/y": "base-y", "b/file": "base-b", "c/dir/f": "base-f",
                                "d": "base-d", "e/z": "base-z", "keep/k": "base-k", "h/": "755", "h/in": "base-h"})
    store = LayerStore(work / "store" / "layers")
    layers = [
        # 1: add to a dir, hide a base dir, new dirs, a file
        tree(work / "l1", {"a/z": "l1-z", "b": None, "f/new": "l1-new", "g": "l1-g", "c/dir/l1": "l1"}),
        # 2: delete a base file, opaque dir over a base dir, a dir over the whiteout of layer 1, a dir over
        #    layer 1's file, a dir over the base's file, and a mode change of a base directory
        tree(work / "l2", {"a/x": None, "e": "/opaque", "e/w": "l2-w", "b/again": "l2-b", "g/gd": "l2-gd",
                           "d/inside": "l2-d", "h/": "700"}),
        # 3: a file over layer 1's dir, a whiteout over layer 2's dir, a symlink, an opaque dir over a merged dir
        tree(work / "l3", {"f": "l3-f", "g": None, "s": "->a/z", "c/dir": "/opaque", "c/dir/only": "l3"}),
    ]
    digests = [store.import_dir(layer).digest for layer in layers]
    flat = work / "flat"
    flatten([store.unpacked(d) for d in digests], flat)

    stacked = mounted_listing(work, [store.unpacked(d) for d in reversed(digests)] + [base])
    flattened = mounted_listing(work, [flat, base])
    assert flattened == stacked
    # What the stack hides of the base stays hidden, what it adds is there.
    assert "a/x" not in stacked and "b/file" not in stacked and "e/z" not in stacked and "g" not in stacked
    assert stacked["b/again"][1] == "l2-b" and stacked["f"][1] == "l3-f" and stacked["s"][:2] == ["link", "a/z"]
    assert stacked["h"][:2] == ["dir", "0o700"] and "c/dir/f" not in stacked and stacked["keep/k"][1] == "base-k"
    # Regular files are the layer store's own inodes: nothing is copied.
    assert os.stat(flat / "a" / "z").st_ino == os.stat(store.unpacked(digests[0]) / "a" / "z").st_ino


def test_replicas_are_prepared_once_and_give_their_disks_to_matching_machines_only(work: Path) -> None:
    store = LayerStore(work / "store" / "layers")
    os_digest = store.import_dir(tree(work / "os", {"opt/app/run": "app"})).digest
    data_digest = store.import_dir(tree(work / "data", {"ref.txt": "data"})).digest
    replicas = ReplicaStore(work / "store" / "replicas", store)

    path = replicas.prepare("westus", "v-0", [os_digest], {"0": [data_digest]})
    assert (path / "os" / "opt" / "app" / "run").read_text() == "app"
    assert (path / "lun0" / "ref.txt").read_text() == "data"
    assert replicas.prepare("westus", "v-0", [os_digest], {"0": [data_digest]}) == path  # idempotent
    with pytest.raises(ReplicaError):
        replicas.prepare("westus", "v-0", [data_digest], {})  # never replaced under running nodes

    disks = replicas.disks("westus", "v-0", [os_digest], {"0": [data_digest], "1": []})
    assert disks == {"os": str(path / "os"), "data": {"0": str(path / "lun0")}, "replica": str(path)}
    assert replicas.disks("westus", "v-0", [data_digest], {}) is None  # other content: the layer store's layers
    assert replicas.disks("eastus", "v-0", [os_digest], {}) is None  # no replica there

    # Deleting the version retires a replica that running machines mount, until they are gone.
    mounted = {str(path / "os")}
    replicas.delete("v-", mounted)
    assert not path.exists()
    assert replicas.disks("westus", "v-0", [os_digest], {"0": [data_digest]}) is None
    [retired] = list(path.parent.glob(".retired.*"))
    assert (retired / "os" / "opt" / "app" / "run").read_text() == "app"
    replicas.sweep({str(retired / "os")})
    assert retired.exists()
    replicas.sweep(set())
    assert not retired.exists()
    replicas.prepare("westus", "w-0", [os_digest], {})
    replicas.delete("w-")  # nothing mounts it: removed at once
    assert not list(path.parent.iterdir())


def test_a_replica_made_before_flattening_is_flattened_on_first_use(work: Path) -> None:
    store = LayerStore(work / "store" / "layers")
    digest = store.import_dir(tree(work / "os", {"opt/app/run": "app"})).digest
    legacy = work / "store" / "replicas" / "westus" / "v-0"
    shutil.copytree(store.unpacked(digest), legacy / digest, symlinks=True)
    (legacy / ".ready").write_text(digest)

    disks = ReplicaStore(work / "store" / "replicas", store).disks("westus", "v-0", [digest], {})
    assert disks is not None and (Path(disks["os"]) / "opt" / "app" / "run").read_text() == "app"
