"""A pool's mountConfiguration: the rules (domain/batch/mounts.py) and what the host makes of them
(runtime/mounts.py), without a server. The behaviour through azure-batch is in test_mounts.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from shoal.core import errors
from shoal.core.hosterrors import MountFailed
from shoal.domain import containers
from shoal.domain.batch import mounts
from shoal.runtime import mounts as host_mounts
from shoal.runtime.agent import HostAgent
from shoal.runtime.marketplace import Catalog

KEY = b"k" * 32
BLOB = {"accountName": "shoal", "containerName": "data", "relativeMountPath": "data",
        "sasKey": f"sig={containers.signature(KEY, 'data')}"}


def _blob(**change: Any) -> list[dict[str, Any]]:
    return [{"azureBlobFileSystemConfiguration": {**BLOB, **change}}]


def _refused(value: Any) -> errors.AzureError:
    with pytest.raises(errors.AzureError) as refused:
        mounts.validate(value)
    return refused.value


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc", ".", "a//b", "a/", "a\\b", "a\0b", "", "a/./b"])
def test_a_mount_path_that_could_leave_the_mounts_directory_is_refused(path: str) -> None:
    refused = _refused(_blob(relativeMountPath=path))
    assert refused.status == 400
    assert refused.values["PropertyName"] in ("mountConfiguration[0].azureBlobFileSystemConfiguration."
                                               "relativeMountPath",)


def test_what_shoal_cannot_honour_is_refused_naming_the_property() -> None:
    prop = "mountConfiguration[0].azureBlobFileSystemConfiguration"
    assert _refused(_blob(accountName="other")).values["PropertyName"] == f"{prop}.accountName"
    assert _refused(_blob(accountKey="k", sasKey=None)).values["PropertyName"] == f"{prop}.accountKey"
    assert _refused(_blob(identityReference={"resourceId": "x"})).values["PropertyName"] == \
        f"{prop}.identityReference"
    assert _refused(_blob(containerName="Bad_Name")).values["PropertyName"] == f"{prop}.containerName"
    assert _refused(_blob(blobfuseOptions="-o big_writes")).values["PropertyName"] == f"{prop}.blobfuseOptions"
    assert _refused(_blob(sasKey=None)).code == "MissingRequiredProperty"
    assert _refused([{"nfsMountConfiguration": {"source": "srv:/x"}}]).values["PropertyName"] == \
        "mountConfiguration[0].nfsMountConfiguration.relativeMountPath"
    assert _refused([{}]).values["PropertyName"] == "mountConfiguration[0]"
    nested = [*_blob(), {"nfsMountConfiguration": {"source": "srv:/x", "relativeMountPath": "data/inner"}}]
    assert _refused(nested).values["PropertyName"] == "mountConfiguration[1].nfsMountConfiguration.relativeMountPath"
    mounts.validate(_blob(blobfuseOptions="-o allow_other -o attr_timeout=240,ro --use-attr-cache=true"))


def test_the_plan_mounts_below_the_mounts_dir_and_the_sas_must_grant_the_container() -> None:
    wanted = [*_blob(blobfuseOptions="-o ro"),
              {"nfsMountConfiguration": {"source": "srv:/x", "relativeMountPath": "n", "mountOptions": "vers=4"}}]
    assert mounts.plan(wanted) == [
        {"kind": "blob", "path": "/mnt/batch/tasks/fsmounts/data", "container": "data", "readOnly": True},
        {"kind": "nfs", "path": "/mnt/batch/tasks/fsmounts/n", "source": "srv:/x", "options": "vers=4"}]
    assert mounts.credential_problems(wanted, KEY) == []
    assert mounts.credential_problems(_blob(sasKey="?sv=x&sig=" + BLOB["sasKey"][4:]), KEY) == []
    [(path, reason)] = mounts.credential_problems(_blob(sasKey="sig=wrong"), KEY)
    assert path == "/mnt/batch/tasks/fsmounts/data" and "'data'" in reason
    assert mounts.credential_problems(_blob(), None)  # no key yet: no SAS can be valid
    error = mounts.node_error(path, reason)
    assert error["code"] == "MountConfigurationError" and "'data'" in error["message"]


def test_a_missing_kernel_client_is_named() -> None:
    assert host_mounts.missing_client("nfs", {"nfs4", "ext4"}, set()) is None
    assert host_mounts.missing_client("nfs", {"ext4"}, {"nfsv4"}) is None  # loadable
    reason = host_mounts.missing_client("nfs", {"ext4"}, set())
    assert reason is not None and "no NFS client" in reason and "nfs4" in reason
    assert "CIFS" in (host_mounts.missing_client("azurefiles", set(), set()) or "")


def test_the_host_refuses_a_mount_point_through_a_link_or_a_missing_container(tmp_path: Path) -> None:
    store, temp = tmp_path / "containers", tmp_path / "temp"
    (store / "data").mkdir(parents=True)
    (temp / "batch" / "tasks" / "fsmounts").mkdir(parents=True)
    blob = {"kind": "blob", "path": "/mnt/batch/tasks/fsmounts/deep/data", "container": "data"}
    assert host_mounts.prepare([blob], temp, store, None).binds == [(str(store / "data"), blob["path"], False)]
    assert (temp / "batch/tasks/fsmounts/deep/data").is_dir()
    # The node replaced a directory on its drive with a link (to the host's /etc): nothing is made through it.
    os.rename(temp / "batch/tasks/fsmounts/deep", temp / "batch/tasks/fsmounts/moved")
    os.symlink("/etc", temp / "batch/tasks/fsmounts/deep")
    with pytest.raises(MountFailed, match="not a directory"):
        host_mounts.prepare([blob], temp, store, None)
    assert not Path("/etc/data").exists()
    with pytest.raises(MountFailed, match="ContainerNotFound"):
        host_mounts.prepare([{**blob, "container": "gone"}], temp, store, None)
    with pytest.raises(MountFailed, match="mounts directory"):
        host_mounts.prepare([{**blob, "path": "/etc/x"}], temp, store, None)


def test_network_mounts_become_the_kernels_mount_with_the_server_address() -> None:
    def resolve(host: str) -> str:
        known = {"files.example": "10.0.0.5", "acct.file.core.windows.net": "10.0.0.6"}
        if host not in known:
            raise OSError(f"{host}: no such host")
        return known[host]

    nfs = {"kind": "nfs", "path": "/mnt/batch/tasks/fsmounts/n", "source": "files.example:/exports/data",
           "options": "-o vers=4.1,hard"}
    assert host_mounts.network_mount(nfs, resolve) == {
        "path": nfs["path"], "type": "nfs", "source": "files.example:/exports/data",
        "data": "vers=4.1,hard,addr=10.0.0.5"}
    cifs = {"kind": "cifs", "path": "/mnt/batch/tasks/fsmounts/c", "source": "//files.example/share",
            "username": "me", "password": "pw", "options": "dir_mode=0777"}
    assert host_mounts.network_mount(cifs, resolve)["data"] == "username=me,password=pw,dir_mode=0777,ip=10.0.0.5"
    share = {"kind": "azurefiles", "path": "/mnt/batch/tasks/fsmounts/a", "username": "acct", "password": "key",
             "source": "https://acct.file.core.windows.net/share", "options": ""}
    mounted = host_mounts.network_mount(share, resolve)
    assert (mounted["type"], mounted["source"]) == ("cifs", "//acct.file.core.windows.net/share")
    assert mounted["data"] == "username=acct,password=key,vers=3.0,serverino,ip=10.0.0.6"
    for bad in ({**nfs, "source": "no-export"}, {**nfs, "options": "-t nfs4"}, {**cifs, "source": "share"},
                {**cifs, "password": "a,b"}, {**nfs, "source": "unknown.example:/x"}):
        with pytest.raises(MountFailed):
            host_mounts.network_mount(bad, resolve)


def test_the_process_runtime_cannot_mount_and_says_so(tmp_path: Path) -> None:
    agent = HostAgent(tmp_path / "store", Catalog.load(None), runtime="process")
    machine = {"machineId": "m1", "mounts": [{"kind": "blob", "path": "/mnt/batch/tasks/fsmounts/x", "container": "c"}]}
    with pytest.raises(MountFailed, match="runtime process"):
        agent._node_mounts(machine, tmp_path)
