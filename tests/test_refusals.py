"""Properties Shoal cannot honour are refused with a 400 naming them, never stored and ignored."""

from __future__ import annotations

import pytest

from shoal.core import errors
from shoal.domain.batch import pools

SPEC = {"vmSize": "standard_d2s_v3", "virtualMachineConfiguration": {
    "imageReference": {"publisher": "shoal", "offer": "host", "sku": "host", "version": "latest"},
    "nodeAgentSKUId": "batch.node.debian 12"}}


def test_a_blob_mount_shoal_cannot_honour_is_refused_naming_the_property() -> None:
    blob = {"accountName": "shoal", "containerName": "data", "sasKey": "sig=x", "relativeMountPath": "data"}
    for change, prop in [({"accountName": "elsewhere"}, "accountName"), ({"accountKey": "k"}, "accountKey"),
                         ({"blobfuseOptions": "-o big_writes"}, "blobfuseOptions")]:
        spec = {**SPEC, "mountConfiguration": [{"azureBlobFileSystemConfiguration": {**blob, **change}}]}
        with pytest.raises(errors.InvalidPropertyValue) as refused:
            pools.validate_spec(spec)
        assert f"mountConfiguration[0].azureBlobFileSystemConfiguration.{prop}" in str(refused.value)
    pools.validate_spec({**SPEC, "mountConfiguration": [{"azureBlobFileSystemConfiguration": blob}]})
    pools.validate_spec({**SPEC, "mountConfiguration": []})  # an empty list asks for nothing
