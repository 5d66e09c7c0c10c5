"""Node and task files, as the host agent serves them: nothing a node links is ever followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.runtime import nodefiles
from shoal.runtime.nodefiles import NodeFileError


@pytest.fixture
def drive(tmp_path: Path) -> Path:
    (tmp_path / "outside.txt").write_text("host secret")
    base = tmp_path / "temp"
    task = base / "batch" / "tasks" / "workitems" / "j" / "t"
    (task / "wd" / "sub").mkdir(parents=True)
    (task / "stdout.txt").write_text("0123456789")
    (task / "wd" / "sub" / "a.txt").write_text("a")
    (task / ".shoal-exit").write_text("0")
    os.symlink(tmp_path / "outside.txt", task / "wd" / "link")
    os.symlink(tmp_path, task / "wd" / "dirlink")
    os.mkfifo(task / "wd" / "fifo")
    return base


ROOT = "batch/tasks/workitems/j/t"


def test_files_are_read_from_one_descriptor_with_ranges(drive: Path) -> None:
    info, data = nodefiles.read_file(drive, ROOT, "stdout.txt", 2, 4)
    assert data == b"234" and info["size"] == 10 and not info["isDirectory"]
    assert nodefiles.read_file(drive, ROOT, "stdout.txt", 8)[1] == b"89"
    assert nodefiles.read_file(drive, ROOT, "stdout.txt", 20)[1] == b""
    assert nodefiles.stat_file(drive, ROOT, "wd")["isDirectory"]


@pytest.mark.parametrize("path", ["wd/link", "wd/dirlink/outside.txt", "wd/fifo", ".shoal-exit", "missing"])
def test_links_fifos_and_shoals_own_files_are_not_found(drive: Path, path: str) -> None:
    with pytest.raises(NodeFileError) as info:
        nodefiles.read_file(drive, ROOT, path)
    assert info.value.kind == "notfound"


def test_a_root_that_became_a_link_lists_nothing_and_serves_nothing(drive: Path, tmp_path: Path) -> None:
    tasks = drive / "batch" / "tasks"
    os.rename(tasks, drive / "batch" / "moved")
    os.symlink(drive / "batch" / "moved", tasks)  # the node's root swapped a parent directory for a link
    assert nodefiles.list_files(drive, ROOT, recursive=True) == []
    with pytest.raises(NodeFileError):
        nodefiles.read_file(drive, ROOT, "stdout.txt")


def test_listing_leaves_out_links_fifos_and_shoals_files(drive: Path) -> None:
    names = [i["name"] for i in nodefiles.list_files(drive, ROOT, recursive=True)]
    assert names == ["stdout.txt", "wd", "wd/sub", "wd/sub/a.txt"]
    assert [i["name"] for i in nodefiles.list_files(drive, ROOT, recursive=False)] == ["stdout.txt", "wd"]


def test_delete_removes_links_themselves_and_wants_recursive_for_a_full_directory(drive: Path,
                                                                                 tmp_path: Path) -> None:
    with pytest.raises(NodeFileError) as info:
        nodefiles.delete_file(drive, ROOT, "wd", recursive=False)
    assert info.value.kind == "notempty"
    os.unlink(drive / ROOT / "wd" / "fifo")
    nodefiles.delete_file(drive, ROOT, "wd", recursive=True)
    assert not (drive / ROOT / "wd").exists() and (tmp_path / "outside.txt").read_text() == "host secret"
    with pytest.raises(NodeFileError) as info:
        nodefiles.delete_file(drive, ROOT, "../t", recursive=True)
    assert info.value.kind == "invalid"


def test_a_retiring_nodes_logs_are_kept_and_nothing_it_links_is_taken(tmp_path: Path) -> None:
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "stdout.txt").write_text("host secret")
    base = tmp_path / "temp"
    tasks = base / "batch" / "tasks"
    task = tasks / "workitems" / "job" / "job-1" / "t1"
    (task / "wd").mkdir(parents=True)
    (task / "stdout.txt").write_text("out of t1")
    (task / "stderr.txt").write_text("err of t1")
    (task / "wd" / "result.bin").write_text("not a log")
    (tasks / "startup" / "wd").mkdir(parents=True)
    (tasks / "startup" / "stdout.txt").write_text("start task out")
    os.symlink(tmp_path / "secret" / "stdout.txt", tasks / "startup" / "stderr.txt")  # a link named like a log
    os.symlink(tmp_path / "secret", tasks / "workitems" / "job" / "job-1" / "t2")  # a task dir that is a link
    os.mkfifo(task / "fileuploadout.txt")  # a fifo named like a log: reading it would block
    archive = tmp_path / "logs"

    assert nodefiles.archive_logs(base, archive) == 3
    kept = sorted(str(p.relative_to(archive)) for p in archive.rglob("*") if p.is_file())
    assert kept == ["batch/tasks/startup/stdout.txt", "batch/tasks/workitems/job/job-1/t1/stderr.txt",
                    "batch/tasks/workitems/job/job-1/t1/stdout.txt"]
    assert not any(p.is_symlink() for p in archive.rglob("*"))
    assert (tmp_path / "secret" / "stdout.txt").read_text() == "host secret"  # not moved, not read
    # The file API serves the archive as it served the drive.
    _, data = nodefiles.read_file(archive, "batch/tasks/workitems/job/job-1/t1", "stdout.txt")
    assert data == b"out of t1"


def test_a_drive_whose_batch_root_is_a_link_gives_nothing(tmp_path: Path) -> None:
    (tmp_path / "elsewhere" / "startup").mkdir(parents=True)
    (tmp_path / "elsewhere" / "startup" / "stdout.txt").write_text("host file")
    (tmp_path / "temp" / "batch").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere", tmp_path / "temp" / "batch" / "tasks")
    assert nodefiles.archive_logs(tmp_path / "temp", tmp_path / "logs") == 0
    assert (tmp_path / "elsewhere" / "startup" / "stdout.txt").exists()
