"""Properties Shoal cannot honour are refused with a 400 naming them, never stored and ignored."""

from __future__ import annotations

import pytest

from shoal.core import errors
from shoal.domain.batch import pools

SPEC = {"vmSize": "standard_d2s_v3", "virtualMachineConfiguration": {
    "imageReference": {"publisher": "shoal", "offer": "host", "sku": "host", "version": "latest"},
    "nodeAgentSKUId": "batch.node.debian 12"}}


def test_a_pool_with_mounts_is_refused_naming_the_property() -> None:
    spec = {**SPEC, "mountConfiguration": [{"nfsMountConfiguration": {"source": "srv:/x", "relativeMountPath": "x"}}]}
    with pytest.raises(errors.InvalidPropertyValue) as refused:
        pools.validate_spec(spec)
    assert "mountConfiguration" in str(refused.value)
    pools.validate_spec({**SPEC, "mountConfiguration": []})  # an empty list asks for nothing
