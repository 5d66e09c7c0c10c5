"""The layer store: canonical tar + digest, overlay-native unpacked copies, strict imports, gc, materialize."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import scratch_root
from shoal.runtime.layers import OPAQUE_XATTR, LayerError, LayerInfo, LayerStore, tar_header

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="layers keep ownership, whiteouts and trusted xattrs: root")


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="shoal-layers-", dir=scratch_root()))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def store(work: Path) -> LayerStore:
    return LayerStore(work / "store" / "layers")


# ---- helpers -------------------------------------------------------------------------------------------------

def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


def make_opaque(path: Path) -> None:
    os.setxattr(path, OPAQUE_XATTR, b"y")


def is_opaque(path: Path) -> bool:
    return OPAQUE_XATTR in os.listxattr(path) and os.getxattr(path, OPAQUE_XATTR) == b"y"


def snapshot(root: Path, *, mtimes: bool = True) -> dict[str, tuple[object, ...]]:
    """Everything a layer preserves, per relative path."""
    result: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            mtime = int(st.st_mtime) if mtimes and not stat.S_ISDIR(st.st_mode) else None
            base = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime)
            if stat.S_ISREG(st.st_mode):
                result[rel] = (*base, hashlib.sha256(path.read_bytes()).hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                result[rel] = (*base, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = (*base, is_opaque(path))
            else:
                result[rel] = (*base, st.st_rdev)
    return result


def blob_members(store: LayerStore, digest: str) -> list[tarfile.TarInfo]:
    with open(store.blob(digest), "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
        data = reader.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return tf.getmembers()


def plain_tar(store: LayerStore, digest: str) -> bytes:
    with open(store.blob(digest), "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
        return reader.read()


def build_tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = b"", *, link: str = "",
           mode: int = 0o644, mtime: int = 1_700_000_000, dev: tuple[int, int] = (0, 0)) -> tuple[tarfile.TarInfo,
                                                                                             bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.linkname = link
    info.devmajor, info.devminor = dev
    return info, (data if kind == tarfile.REGTYPE else None)


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def hand_built_upper(upper: Path) -> None:
    """An overlay upper as the kernel leaves it (whiteouts, an opaque dir, excluded dirs, a fifo, a socket)."""
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "app.conf").write_text("setting=1\n")
    whiteout(upper / "etc" / "motd")
    (upper / "opt" / "wheels").mkdir(parents=True)
    make_opaque(upper / "opt" / "wheels")
    (upper / "opt" / "wheels" / "new.whl").write_bytes(os.urandom(3000))
    (upper / "usr" / "bin").mkdir(parents=True)
    tool = upper / "usr" / "bin" / "tool"
    tool.write_bytes(b"#!/bin/sh\necho tool\n")
    os.chown(tool, 1234, 2345)
    os.chmod(tool, 0o4755)  # after chown, which clears setuid
    os.link(tool, upper / "usr" / "bin" / "tool-hardlink")
    (upper / "usr" / "bin" / "alias").symlink_to("/usr/bin/tool")
    (upper / "usr" / "lib").mkdir()
    (upper / "usr" / "lib" / "big.so").write_bytes(os.urandom(5 << 20) + b"\0" * 1000)
    (upper / "usr" / "lib" / "empty").write_bytes(b"")
    whiteout(upper / "removed-dir")
    for excluded in ("tmp", "run", "var/tmp"):
        (upper / excluded).mkdir(parents=True)
        (upper / excluded / "junk").write_text("junk")
    (upper / "var" / "log").mkdir()
    (upper / "var" / "log" / "app.log").write_text("log\n")
    os.mkfifo(upper / "var" / "log" / "fifo")
    os.mknod(upper / "var" / "log" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.setxattr(upper / "etc", "trusted.overlay.impure", b"y")
    os.setxattr(upper / "etc" / "app.conf", "trusted.overlay.origin", b"\0\xfb\x21")


# ---- capture -------------------------------------------------------------------------------------------------

def test_capture_converts_an_overlay_upper_to_the_canonical_tar_and_an_unpacked_copy(work: Path,
                                                                                    store: LayerStore) -> None:
    upper = work / "upper"
    hand_built_upper(upper)
    info = store.capture(upper)
    assert store.has(info.digest) and info.digest in store.digests()
    assert hashlib.sha256(plain_tar(store, info.digest)).hexdigest() == info.digest
    assert info.size == len(plain_tar(store, info.digest)) and info.size % 10240 == 0

    members = blob_members(store, info.digest)
    names = [m.name for m in members]
    # canonical order: depth first, siblings sorted bytewise by their name in the tar
    assert names == [".wh.removed-dir", "etc", "etc/.wh.motd", "etc/app.conf", "opt", "opt/wheels",
                     "opt/wheels/.wh..wh..opq", "opt/wheels/new.whl", "usr", "usr/bin", "usr/bin/alias",
                     "usr/bin/tool", "usr/bin/tool-hardlink", "usr/lib", "usr/lib/big.so", "usr/lib/empty", "var",
                     "var/log", "var/log/app.log"]
    assert info.entries == len(members)
    by_name = {m.name: m for m in members}
    assert by_name["usr/bin/tool"].mode == 0o4755 and (by_name["usr/bin/tool"].uid, by_name["usr/bin/tool"].gid) == (
        1234, 2345)
    assert by_name["usr/bin/tool-hardlink"].islnk() and by_name["usr/bin/tool-hardlink"].linkname == "usr/bin/tool"
    assert by_name["usr/bin/alias"].issym() and by_name["usr/bin/alias"].linkname == "/usr/bin/tool"
    for marker in (".wh.removed-dir", "etc/.wh.motd", "opt/wheels/.wh..wh..opq"):
        m = by_name[marker]
        assert m.isreg() and (m.size, m.mode, m.uid, m.gid, m.mtime) == (0, 0, 0, 0, 0)
    assert all(m.uname == "" and m.gname == "" for m in members)

    unpacked = store.unpacked(info.digest)
    got = snapshot(unpacked)
    want = snapshot(upper)
    for skipped in ("tmp", "tmp/junk", "run", "run/junk", "var/tmp", "var/tmp/junk", "var/log/fifo",
                    "var/log/null"):
        del want[skipped]
    # whiteouts carry no metadata in a layer; everything else is identical, including mtimes of files
    for wh in ("etc/motd", "removed-dir"):
        assert got[wh] == (stat.S_IFCHR, 0, 0, 0, 0, 0)
        del got[wh], want[wh]
    assert got == want
    assert is_opaque(unpacked / "opt" / "wheels") and not is_opaque(unpacked / "etc")
    assert os.listxattr(unpacked / "etc") == [] and os.listxattr(unpacked / "etc" / "app.conf") == []
    tool_u = unpacked / "usr" / "bin" / "tool"
    assert tool_u.stat().st_ino == (unpacked / "usr" / "bin" / "tool-hardlink").stat().st_ino
    assert tool_u.stat().st_ino != (upper / "usr" / "bin" / "tool").stat().st_ino  # a copy, not a link
    assert store.verify(info.digest) and store.verify(info.digest, unpacked=True)
    assert listing(store.root / "tmp") == []

    # GNU tar reads the canonical form too
    out = subprocess.run(["tar", "-tvf", "-"], input=plain_tar(store, info.digest), capture_output=True, check=True)
    assert b"usr/bin/tool-hardlink link to usr/bin/tool" in out.stdout


def test_capture_is_idempotent_and_deterministic_mtimes_are_content(work: Path, store: LayerStore) -> None:
    upper = work / "upper"
    hand_built_upper(upper)
    first = store.capture(upper)
    blob_ino = store.blob(first.digest).stat().st_ino
    assert store.capture(upper) == first
    assert store.blob(first.digest).stat().st_ino == blob_ino  # the existing layer was kept, not replaced

    copy = work / "copy"
    subprocess.run(["cp", "-a", str(upper), str(copy)], check=True)
    assert store.capture(copy) == first  # same tree elsewhere (other inodes, other ctimes) -> same digest

    f = copy / "etc" / "app.conf"
    st = f.stat()
    whole = st.st_mtime_ns // 1_000_000_000 * 1_000_000_000
    os.utime(f, ns=(whole + 300_000_000, whole + 300_000_000))
    assert store.capture(copy).digest == first.digest  # sub-second parts are not part of a layer
    os.utime(f, ns=(whole + 1_000_000_000, whole + 1_000_000_000))
    changed = store.capture(copy)
    assert changed.digest != first.digest  # whole seconds are
    os.utime(f, ns=(whole, whole))
    os.chown(f, 7, 7)
    assert store.capture(copy).digest not in (first.digest, changed.digest)  # ownership too


def test_capture_of_a_changing_upper_is_consistent(work: Path, store: LayerStore) -> None:
    """A VM may still be writing: files vanish, shrink, grow and appear during the walk. The layer must still be
    well-formed and its unpacked copy must be exactly the tree its blob describes."""
    upper = work / "upper"
    hand_built_upper(upper)
    churn = upper / "churn"
    churn.mkdir()
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            d = churn / f"d{i % 7}"
            d.mkdir(exist_ok=True)
            (d / f"f{i}").write_bytes(os.urandom(i % 5000))
            with open(churn / "growing", "ab") as fh:
                fh.write(b"x" * 1000)
            if i % 3 == 0:
                (churn / "growing").write_bytes(b"")  # truncate while it may be being read
            old = churn / f"d{(i + 3) % 7}"
            if old.exists():
                shutil.rmtree(old, ignore_errors=True)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        infos = [store.capture(upper) for _ in range(5)]
    finally:
        stop.set()
        thread.join()
    for info in infos:
        assert store.verify(info.digest, unpacked=True)
        assert blob_members(store, info.digest)  # readable tar
    assert listing(store.root / "tmp") == []


def test_capture_excludes_and_rejects_unrepresentable_names(work: Path, store: LayerStore) -> None:
    upper = work / "upper"
    (upper / "data").mkdir(parents=True)
    (upper / "data" / "x").write_text("x")
    (upper / "cache").mkdir()
    (upper / "cache" / "y").write_text("y")
    info = store.capture(upper, exclude=["/cache/"])
    assert [m.name for m in blob_members(store, info.digest)] == ["data", "data/x"]
    assert store.capture(upper, exclude=()).entries == 4

    (upper / "data" / ".wh.fake").write_text("")
    with pytest.raises(LayerError, match=r"data/\.wh\.fake"):
        store.capture(upper)
    (upper / "data" / ".wh.fake").unlink()
    os.mkdir(os.fsencode(upper / "data") + b"/caf\xe9")
    with pytest.raises(LayerError, match="UTF-8"):
        store.capture(upper)
    assert listing(store.root / "tmp") == []


def test_capture_refuses_redirect_and_metacopy_uppers(work: Path, store: LayerStore) -> None:
    upper = work / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/orig")
    with pytest.raises(LayerError, match="redirect_dir"):
        store.capture(upper)
    os.removexattr(upper / "moved", "trusted.overlay.redirect")
    sparse = upper / "moved" / "sparse"
    with open(sparse, "wb") as fh:
        fh.truncate(1 << 20)  # no blocks: what a metadata-only copy-up looks like
    info = store.capture(upper)  # a plain sparse file is fine (its zeros are stored)
    assert (store.unpacked(info.digest) / "moved" / "sparse").read_bytes() == bytes(1 << 20)
    os.setxattr(sparse, "trusted.overlay.metacopy", b"")
    with pytest.raises(LayerError, match="metacopy"):
        store.capture(upper)
    assert listing(store.root / "tmp") == []


def test_empty_upper_is_a_valid_layer(work: Path, store: LayerStore) -> None:
    (work / "upper").mkdir()
    info = store.capture(work / "upper")
    assert (info.size, info.entries) == (10240, 0)
    assert listing(store.unpacked(info.digest)) == []


def test_long_names_big_ids_and_links_use_pax_and_survive_export_import(work: Path, store: LayerStore) -> None:
    upper = work / "upper"
    deep = upper / ("d" * 90) / ("e" * 90)
    deep.mkdir(parents=True)
    (deep / "file-with-a-long-name.txt").write_text("deep")
    (upper / "link").symlink_to("/" + "t" * 150)
    os.link(deep / "file-with-a-long-name.txt", upper / "zz-hardlink-to-deep")
    (upper / "big-ids").write_text("ids")
    os.chown(upper / "big-ids", 3_000_000, 4_000_000)
    os.utime(upper / "big-ids", (-100, -100))
    (upper / "ünïcode-名前").write_text("utf8")
    info = store.capture(upper)
    members = {m.name: m for m in blob_members(store, info.digest)}
    assert members["big-ids"].uid == 3_000_000 and members["big-ids"].gid == 4_000_000
    assert members["big-ids"].mtime == -100
    assert members["link"].linkname == "/" + "t" * 150
    assert members["zz-hardlink-to-deep"].linkname.endswith("file-with-a-long-name.txt")
    assert "ünïcode-名前" in members
    subprocess.run(["tar", "-tf", "-"], input=plain_tar(store, info.digest), capture_output=True, check=True)

    other = LayerStore(work / "other" / "layers")
    again = other.import_tar(store.export(info.digest), expected_digest=info.digest)
    assert again == info
    assert snapshot(other.unpacked(info.digest)) == snapshot(store.unpacked(info.digest))


def test_tar_header_is_ustar_with_a_valid_checksum() -> None:
    block = tar_header(b"a/b", 0o755, 1, 2, 10, 1_700_000_000, b"0")
    assert len(block) == 512 and block[257:263] == b"ustar\x00"
    info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
    assert (info.name, info.mode, info.uid, info.gid, info.size, info.mtime) == ("a/b", 0o755, 1, 2, 10, 1_700_000_000)


# ---- a real overlay ------------------------------------------------------------------------------------------

def _have_overlay() -> bool:
    if shutil.which("unshare") is None:
        return False
    return "overlay" in Path("/proc/filesystems").read_text()


def _in_mount_ns(script: str) -> None:
    """Run a shell script in a private mount namespace: its mounts vanish with it, nothing is left behind."""
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-euc", script],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not _have_overlay(), reason="needs unshare and overlayfs")
def test_real_overlay_upper_round_trips_through_unpacked_layers_and_materialize(work: Path,
                                                                                  store: LayerStore) -> None:
    lower_tree = work / "lower"
    (lower_tree / "etc").mkdir(parents=True)
    (lower_tree / "etc" / "motd").write_text("hello\n")
    (lower_tree / "etc" / "keep").write_text("old\n")
    (lower_tree / "opt" / "wheels").mkdir(parents=True)
    for name in ("old1.whl", "old2.whl"):
        (lower_tree / "opt" / "wheels" / name).write_text(name)
    (lower_tree / "usr" / "bin").mkdir(parents=True)
    (lower_tree / "usr" / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(lower_tree / "usr" / "bin" / "tool", 0o755)
    (lower_tree / "gone" / "inner").mkdir(parents=True)
    (lower_tree / "gone" / "inner" / "file").write_text("x")
    base = store.import_dir(lower_tree)
    lower = store.unpacked(base.digest)

    upper, wd, merged = work / "upper", work / "work", work / "merged"
    for d in (upper, wd, merged):
        d.mkdir()
    _in_mount_ns(f"""
        mount -t overlay overlay -o lowerdir={lower},upperdir={upper},workdir={wd} {merged}
        cd {merged}
        rm etc/motd
        rm -rf opt/wheels && mkdir opt/wheels && echo new > opt/wheels/new.whl
        echo changed > etc/keep
        mkdir -p root && echo cfg > root/.cfg
        rm -rf gone
        mkfifo root/fifo
        mkdir -p tmp && echo junk > tmp/junk
        ln -s /usr/bin/tool usr/bin/alias
    """)
    assert stat.S_ISCHR((upper / "etc" / "motd").lstat().st_mode)  # the kernel made a whiteout
    top = store.capture(upper)
    names = [m.name for m in blob_members(store, top.digest)]
    assert "etc/.wh.motd" in names and ".wh.gone" in names and "opt/wheels/.wh..wh..opq" in names
    assert not any(n.startswith("tmp") or n.endswith("fifo") for n in names)

    # the unpacked layers stacked by the kernel give the VM's view, and so does materialize (no overlayfs)
    top_dir = store.unpacked(top.digest)
    view, merged2 = work / "view", work / "merged2"
    merged2.mkdir()
    _in_mount_ns(f"""
        mount -t overlay overlay -o ro,lowerdir={top_dir}:{lower} {merged2}
        cp -a {merged2} {view}
    """)
    flat = work / "flat"
    store.materialize([base.digest, top.digest], flat)
    assert snapshot(flat) == snapshot(view)
    assert listing(flat) == ["etc", "etc/keep", "opt", "opt/wheels", "opt/wheels/new.whl", "root", "root/.cfg",
                             "usr", "usr/bin", "usr/bin/alias", "usr/bin/tool"]
    assert (flat / "etc" / "keep").read_text() == "changed\n"
    assert os.readlink(flat / "usr" / "bin" / "alias") == "/usr/bin/tool"
    assert not is_opaque(flat / "opt" / "wheels")  # a materialized tree is plain: no overlay markers


def test_materialize_applies_oci_whiteouts_opaque_dirs_and_hardlinks(work: Path, store: LayerStore) -> None:
    base = store.import_tar(io.BytesIO(build_tar([
        member("a", data=b"a"), member("d/", tarfile.DIRTYPE), member("d/x", data=b"x"), member("d/y", data=b"y"),
        member("e/", tarfile.DIRTYPE), member("e/z", data=b"z"), member("f/", tarfile.DIRTYPE),
        member("f/keep", data=b"keep"), member("s", tarfile.SYMTYPE, link="a"),
    ])))
    top = store.import_tar(io.BytesIO(build_tar([
        member(".wh.a"), member("d/.wh..wh..opq"), member("d/new", data=b"new"), member(".wh.e"),
        member("f/h1", data=b"shared"), member("g/h2", tarfile.LNKTYPE, link="f/h1"),
        member("s/", tarfile.DIRTYPE), member("s/inside", data=b"i"),
    ])))
    unpacked = store.unpacked(top.digest)
    assert stat.S_ISCHR((unpacked / "a").lstat().st_mode) and (unpacked / "a").lstat().st_rdev == 0
    assert is_opaque(unpacked / "d")
    dest = work / "dest"
    store.materialize([base.digest, top.digest], dest)
    assert listing(dest) == ["d", "d/new", "f", "f/h1", "f/keep", "g", "g/h2", "s", "s/inside"]
    assert (dest / "f" / "h1").stat().st_ino == (dest / "g" / "h2").stat().st_ino
    assert (dest / "f" / "keep").read_bytes() == b"keep"
    # applying only the base gives the base
    only = work / "only"
    store.materialize([base.digest], only)
    assert listing(only) == ["a", "d", "d/x", "d/y", "e", "e/z", "f", "f/keep", "s"]
    with pytest.raises(KeyError):
        store.materialize(["0" * 64], work / "nothing")
    assert not (work / "nothing").exists()


def test_same_layer_whiteout_and_directory_means_opaque(work: Path, store: LayerStore) -> None:
    info = store.import_tar(io.BytesIO(build_tar([
        member(".wh.cfg"), member("cfg/", tarfile.DIRTYPE), member("cfg/new", data=b"n"),
        member(".wh.file"), member("file", data=b"f"),
    ])))
    unpacked = store.unpacked(info.digest)
    assert is_opaque(unpacked / "cfg") and (unpacked / "file").read_bytes() == b"f"
    names = [m.name for m in blob_members(store, info.digest)]
    assert names == ["cfg", "cfg/.wh..wh..opq", "cfg/new", "file"]


# ---- import --------------------------------------------------------------------------------------------------

def test_import_accepts_plain_gzip_xz_and_zstd_and_expected_digests(work: Path, store: LayerStore) -> None:
    raw = build_tar([member("./", tarfile.DIRTYPE), member("./usr/", tarfile.DIRTYPE, mode=0o755),
                     member("./usr/bin/prog", data=b"\x7fELF" + bytes(5000), mode=0o755),
                     member("./etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
                     member("./lib64", tarfile.SYMTYPE, link="usr/lib64"),
                     member("./etc/alt", tarfile.SYMTYPE, link="../usr/bin/prog"),
                     member("./etc/abs", tarfile.SYMTYPE, link="/etc/passwd")])
    raw_digest = hashlib.sha256(raw).hexdigest()
    info = store.import_tar(io.BytesIO(raw), expected_digest=raw_digest)  # the input's own digest is accepted
    assert info.digest != raw_digest
    assert (store.unpacked(info.digest) / "usr" / "bin" / "prog").read_bytes().startswith(b"\x7fELF")
    assert (store.unpacked(info.digest) / "etc").stat().st_mode & 0o777 == 0o755  # implicit parent
    variants = {"tar": raw, "tar.gz": gzip.compress(raw), "tar.xz": lzma.compress(raw),
                "tar.zst": zstandard.ZstdCompressor().compress(raw)}
    for suffix, data in variants.items():
        path = work / f"rootfs.{suffix}"
        path.write_bytes(data)
        other = LayerStore(work / suffix / "layers")
        assert other.import_tar(path, expected_digest=info.digest) == info
        with open(path, "rb") as fh:
            assert other.import_tar(fh) == info
    # the canonical form is a fixpoint of import
    assert store.import_tar(store.export(info.digest), expected_digest=info.digest) == info


def test_integrity_mismatch_is_rejected_and_nothing_is_stored(work: Path, store: LayerStore) -> None:
    raw = build_tar([member("file", data=b"data")])
    with pytest.raises(LayerError, match="integrity"):
        store.import_tar(io.BytesIO(raw), expected_digest="0" * 64)
    with pytest.raises(LayerError, match="sha256"):
        store.import_tar(io.BytesIO(raw), expected_digest="../../etc")
    assert store.digests() == set() and listing(store.root / "unpacked") == [] and listing(store.root / "tmp") == []


def _evil_cases(outside: Path) -> list[tuple[str, list[tuple[tarfile.TarInfo, bytes | None]], str]]:
    """(case, members, text the error must contain: the member's name)."""
    return [
        ("dotdot", [member("ok", data=b"fine"), member("../evil", data=b"x")], "../evil"),
        ("dotdot-deep", [member("a/b/../../../evil", data=b"x")], "a/b/../../../evil"),
        ("absolute", [member(f"{outside}/evil", data=b"x")], f"{outside}/evil"),
        ("absolute-etc", [member("/etc/shoal-test-evil", data=b"x")], "/etc/shoal-test-evil"),
        ("symlink-parent", [member("esc", tarfile.SYMTYPE, link=str(outside)), member("esc/evil", data=b"x")],
         "esc/evil"),
        ("symlink-parent-dir", [member("esc", tarfile.SYMTYPE, link=str(outside)),
                                member("esc/sub/", tarfile.DIRTYPE)], "esc/sub"),
        ("symlink-relative-escape", [member("up", tarfile.SYMTYPE, link="../../..")], "up"),
        ("symlink-relative-escape-deep", [member("a/b/l", tarfile.SYMTYPE, link="../../../x")], "a/b/l"),
        ("hardlink-absolute", [member("h", tarfile.LNKTYPE, link=str(outside / "secret"))], "h"),
        ("hardlink-dotdot", [member("h", tarfile.LNKTYPE, link="../outside/secret")], "h"),
        ("hardlink-through-symlink", [member("esc", tarfile.SYMTYPE, link=str(outside)),
                                      member("h", tarfile.LNKTYPE, link="esc/secret")], "h"),
        ("hardlink-to-missing", [member("h", tarfile.LNKTYPE, link="nothing")], "h"),
        ("hardlink-to-dir", [member("d/", tarfile.DIRTYPE), member("h", tarfile.LNKTYPE, link="d")], "h"),
        ("chardev", [member("dev/null", tarfile.CHRTYPE, dev=(1, 3))], "dev/null"),
        ("chardev-0-0", [member("wh", tarfile.CHRTYPE)], "wh"),
        ("blockdev", [member("dev/sda", tarfile.BLKTYPE, dev=(8, 0))], "dev/sda"),
        ("fifo", [member("pipe", tarfile.FIFOTYPE)], "pipe"),
        ("whiteout-dir", [member(".wh.x/", tarfile.DIRTYPE)], ".wh.x"),
        ("whiteout-symlink", [member(".wh.x", tarfile.SYMTYPE, link="y")], ".wh.x"),
        ("aufs-meta", [member(".wh..wh.plnk", data=b"")], ".wh..wh.plnk"),
        ("non-utf8", [member("caf\udce9", data=b"x")], "caf"),
        ("long-component", [member("x" * 300, data=b"x")], "xxxx"),
        ("file-then-dir-child", [member("f", data=b"x"), member("f/child", data=b"y")], "f/child"),
        ("dir-replaced-by-file", [member("d/", tarfile.DIRTYPE), member("d", data=b"x")], "d"),
    ]


@pytest.mark.parametrize("case", [c[0] for c in _evil_cases(Path("/x"))])
def test_import_rejects_unsafe_members_and_writes_nothing_outside(work: Path, store: LayerStore, case: str) -> None:
    outside = work / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    members, needle = next((m, n) for c, m, n in _evil_cases(outside) if c == case)
    before = snapshot(work)
    raw = build_tar(members)
    with pytest.raises(LayerError) as err:
        store.import_tar(io.BytesIO(raw))
    assert needle in str(err.value)
    assert snapshot(work) == before  # the store dir only got its empty staging dir back
    assert listing(store.root / "tmp") == [] and store.digests() == set()
    assert not Path("/etc/shoal-test-evil").exists()
    # the same stream compressed is rejected the same way
    with pytest.raises(LayerError):
        store.import_tar(io.BytesIO(zstandard.ZstdCompressor().compress(raw)))


_SEGMENTS = st.sampled_from(["a", "b", "c", ".wh.a", ".wh.b", ".wh..wh..opq", ".", "..", "", "é"])
_MEMBERS = st.lists(st.tuples(
    st.lists(_SEGMENTS, min_size=1, max_size=4).map("/".join),
    st.sampled_from([tarfile.REGTYPE, tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]),
    st.lists(st.sampled_from(["a", "b", "c", "..", "/abs"]), min_size=1, max_size=3).map("/".join),
    st.binary(max_size=64),
), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=_MEMBERS)
def test_any_archive_is_imported_canonically_or_rejected_cleanly(work: Path, members: list[tuple[str, bytes, str,
                                                                                               bytes]]) -> None:
    store = LayerStore(work / "fuzz" / "layers")
    entries = []
    for name, kind, link, data in members:
        info, payload = member(name or "x", kind, data, link=link)
        entries.append((info, payload))
    raw = build_tar(entries)
    try:
        info = store.import_tar(io.BytesIO(raw))
    except LayerError:
        assert store.digests() == set()
    else:
        assert store.verify(info.digest, unpacked=True)
        assert store.import_tar(store.export(info.digest), expected_digest=info.digest) == info  # fixpoint
    assert listing(store.root / "tmp") == []
    assert sorted(p.name for p in work.iterdir()) == ["fuzz"]  # nothing next to the store
    assert sorted(p.name for p in (work / "fuzz").iterdir()) == ["layers"]
    assert {p.name for p in store.root.iterdir()} <= {"blobs", "unpacked", "tmp", "lock"}
    assert not Path("/abs").exists()
    shutil.rmtree(work / "fuzz")


def test_import_can_drop_special_files_instead(store: LayerStore) -> None:
    raw = build_tar([member("dev/", tarfile.DIRTYPE), member("dev/null", tarfile.CHRTYPE, dev=(1, 3)),
                     member("dev/fifo", tarfile.FIFOTYPE), member("etc/hostname", data=b"x")])
    info = store.import_tar(io.BytesIO(raw), skip_special=True)
    assert listing(store.unpacked(info.digest)) == ["dev", "etc", "etc/hostname"]


def _damaged() -> list[bytes]:
    tar = build_tar([member("big", data=os.urandom(100_000)), member("small", data=b"x")])
    gz = bytearray(gzip.compress(tar))
    gz[len(gz) // 2] ^= 0xFF
    return [b"", b"not a tarball at all" * 100, gzip.compress(b"garbage" * 100), tar[:50_000],
            gzip.compress(tar)[:40_000], bytes(gz), lzma.compress(tar)[:-10],
            zstandard.ZstdCompressor().compress(tar)[:-3]]


@pytest.mark.parametrize("data", _damaged(), ids=["empty", "text", "gz-garbage", "truncated", "gz-truncated",
                                                  "gz-corrupt", "xz-truncated", "zst-truncated"])
def test_import_rejects_garbage(store: LayerStore, data: bytes) -> None:
    with pytest.raises(LayerError):
        store.import_tar(io.BytesIO(data))
    assert listing(store.root / "tmp") == []


def test_import_dir_copies_a_plain_tree_and_drops_device_nodes(work: Path, store: LayerStore) -> None:
    tree = work / "rootfs"
    (tree / "dev").mkdir(parents=True)
    os.mknod(tree / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(tree / "dev" / "initctl")
    (tree / "etc").mkdir()
    (tree / "etc" / "debian_version").write_text("12.5\n")
    (tree / "tmp").mkdir()
    (tree / "tmp" / "kept").write_text("plain trees keep tmp")
    info = store.import_dir(tree)
    assert listing(store.unpacked(info.digest)) == ["dev", "etc", "etc/debian_version", "tmp", "tmp/kept"]
    assert (tree / "etc" / "debian_version").exists()  # copied, not consumed
    with pytest.raises(LayerError):
        store.import_tar(work / "missing.tar")


# ---- publication, verification, gc ---------------------------------------------------------------------------

def test_concurrent_captures_of_the_same_tree_agree(work: Path, store: LayerStore) -> None:
    upper = work / "upper"
    hand_built_upper(upper)
    results: list[LayerInfo] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(LayerStore(store.root).capture(upper))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    script = "import sys; from pathlib import Path; from shoal.runtime.layers import LayerStore; " \
             "print(LayerStore(Path(sys.argv[1])).capture(Path(sys.argv[2])).digest)"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(store.root), str(upper)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    for t in threads:
        t.join()
    assert not errors
    digests = {r.digest for r in results} | set(outs)
    assert len(digests) == 1
    digest = digests.pop()
    assert store.digests() == {digest} and store.verify(digest, unpacked=True)
    assert listing(store.root / "tmp") == []


def test_verify_detects_a_corrupt_blob_and_a_modified_unpacked_copy(work: Path, store: LayerStore) -> None:
    upper = work / "upper"
    hand_built_upper(upper)
    info = store.capture(upper)
    blob = store.blob(info.digest)
    good = blob.read_bytes()
    assert store.verify(info.digest)
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0xFF
    blob.write_bytes(bytes(corrupt))
    assert not store.verify(info.digest)
    blob.write_bytes(good[: len(good) // 2])
    assert not store.verify(info.digest)
    blob.write_bytes(good)
    assert store.verify(info.digest, unpacked=True)
    (store.unpacked(info.digest) / "etc" / "app.conf").write_text("tampered\n")
    assert store.verify(info.digest) and not store.verify(info.digest, unpacked=True)
    assert not store.verify("f" * 64) and not store.verify("nonsense")


def test_gc_removes_only_unreferenced_layers(work: Path, store: LayerStore) -> None:
    infos = [store.import_tar(io.BytesIO(build_tar([member(f"file{i}", data=b"%d" % i)]))) for i in range(3)]
    keep = infos[1].digest
    partial = "a" * 64  # a blob without its unpacked copy (e.g. after a crash)
    (store.root / "blobs" / f"{partial}.tar.zst").write_bytes(b"")
    stale = store.root / "tmp" / "999999999-deadbeef"  # staging of a process that no longer exists
    (stale / "tree").mkdir(parents=True)
    mine = store.root / "tmp" / f"{os.getpid()}-cafe"  # a capture of a live process is left alone
    mine.mkdir()
    usage = store.disk_usage()
    removed = store.gc({keep, "b" * 64})
    assert removed == sorted([infos[0].digest, infos[2].digest, partial])
    assert store.digests() == {keep} and store.has(keep) and store.verify(keep)
    for info in (infos[0], infos[2]):
        assert not store.has(info.digest)
        assert not (store.root / "unpacked" / info.digest).exists()
        with pytest.raises(KeyError):
            store.unpacked(info.digest)
        with pytest.raises(KeyError):
            store.export(info.digest)
    assert not stale.exists() and mine.exists()
    assert store.disk_usage() < usage
    assert store.gc({keep}) == []
    assert store.gc(set()) == [keep] and store.digests() == set()


def test_lookups_of_malformed_digests_fail_cleanly(store: LayerStore) -> None:
    assert not store.has("../../etc")
    for bad in ("../../etc", "A" * 64, ""):
        with pytest.raises(KeyError):
            store.unpacked(bad)
        with pytest.raises(KeyError):
            store.blob(bad)
