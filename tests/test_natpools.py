"""Fast unit tests of the inbound NAT pool rules, the node capacity they allow and the endpoints nodes get."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core import errors
from shoal.domain.batch import natpools, pools
from shoal.schemas import batch as wire

PATH = "networkConfiguration.endpointConfiguration.inboundNATPools"


def nat(name: str = "ssh", backend: int = 22, start: int = 15000, end: int = 15099, protocol: str = "tcp",
        rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    pool: dict[str, Any] = {"name": name, "protocol": protocol, "backendPort": backend,
                            "frontendPortRangeStart": start, "frontendPortRangeEnd": end}
    if rules is not None:
        pool["networkSecurityGroupRules"] = rules
    return pool


def rule(priority: int = 150, access: str = "allow", prefix: str = "*", ports: list[str] | None = None
         ) -> dict[str, Any]:
    r: dict[str, Any] = {"priority": priority, "access": access, "sourceAddressPrefix": prefix}
    if ports is not None:
        r["sourcePortRanges"] = ports
    return r


def spec(*nat_pools: dict[str, Any], **network: Any) -> dict[str, Any]:
    return {"vmSize": "standard_d2s_v3", "virtualMachineConfiguration": {
        "imageReference": {"publisher": "shoal", "offer": "host", "sku": "host", "version": "latest"},
        "nodeAgentSKUId": "batch.node.debian 12"},
        "networkConfiguration": {"endpointConfiguration": {"inboundNATPools": list(nat_pools)}, **network}}


def refusal(s: dict[str, Any]) -> errors.AzureError:
    with pytest.raises(errors.AzureError) as info:
        pools.validate_spec(s)
    assert info.value.status == 400
    return info.value


def assert_refused(s: dict[str, Any], prop: str, reason: str, code: str = "InvalidPropertyValue") -> None:
    err = refusal(s)
    assert err.code == code, err.message
    assert err.values["PropertyName"] == prop, err.message
    assert prop in err.message and reason in err.message, err.message


# --- what is accepted ---------------------------------------------------------------------------------------------
def test_a_pool_without_network_configuration_or_nat_pools_is_accepted() -> None:
    base = spec()
    del base["networkConfiguration"]
    pools.validate_spec(base)
    pools.validate_spec(spec())
    pools.validate_spec({**base, "networkConfiguration": {}})


def test_task_slots_per_node_must_be_a_whole_number_in_the_vm_sizes_range() -> None:
    pools.validate_spec({**spec(), "taskSlotsPerNode": 8})  # a D2s_v3 has 2 cores: at most 4 x 2
    for bad in (True, 0, 9, "2", 1.5):  # JSON true is no number: the assignment probe reads it as one
        assert_refused({**spec(), "taskSlotsPerNode": bad}, "taskSlotsPerNode", "must be between 1 and 8")


def test_a_subnet_id_must_be_a_string_and_jobs_cannot_have_subnets_of_their_own() -> None:
    # (Whether the subnet exists is checked against the store: tests/test_pool_vnet.py.)
    pools.validate_spec({**spec(), "networkConfiguration": {
        "subnetId": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/x"}})
    assert_refused({**spec(), "networkConfiguration": {"subnetId": 7}}, "networkConfiguration.subnetId",
                   "the ARM id of a virtual network's subnet")
    assert_refused({**spec(), "networkConfiguration": {"dynamicVNetAssignmentScope": "job"}},
                   "networkConfiguration.dynamicVNetAssignmentScope", "only none is supported")
    pools.validate_spec({**spec(), "networkConfiguration": {"dynamicVNetAssignmentScope": "none"}})


def test_five_nat_pools_at_the_limits_of_every_rule_are_accepted() -> None:
    pools.validate_spec(spec(
        nat("a", backend=1, start=1, end=40, rules=[rule(150), rule(4096, "deny", "10.10.10.10")]),
        nat("b_", backend=65535, start=41, end=80, protocol="udp", rules=[rule(151, prefix="192.168.1.0/24",
                                                                                ports=["22", "100-200", "0-21"])]),
        nat("C.d-e_", backend=3389, start=65495, end=65534, rules=[rule(152, prefix="Internet", ports=["*"])]),
        nat("x" * 77, backend=29875, start=49960, end=49999, rules=[rule(153, prefix="::1")]),
        nat("9", backend=29878, start=55001, end=55040, rules=[rule(154, prefix="VirtualNetwork")])))


def test_management_plane_spellings_are_validated_in_their_canonical_form() -> None:
    props = {"vmSize": "STANDARD_D2S_V3", "deploymentConfiguration": {"virtualMachineConfiguration": {
        "imageReference": {"publisher": "shoal", "offer": "host", "sku": "host", "version": "latest"},
        "nodeAgentSkuId": "batch.node.debian 12"}},
        "networkConfiguration": {"endpointConfiguration": {"inboundNatPools": [
            {"name": "ssh", "protocol": "TCP", "backendPort": 22, "frontendPortRangeStart": 15000,
             "frontendPortRangeEnd": 15100, "networkSecurityGroupRules": [
                 {"priority": 150, "access": "Allow", "sourceAddressPrefix": "*"}]}]}}}
    canonical = wire.spec_from_arm(props)
    pools.validate_spec(canonical)
    nat_pool = canonical["networkConfiguration"]["endpointConfiguration"]["inboundNATPools"][0]
    assert nat_pool["protocol"] == "tcp" and nat_pool["networkSecurityGroupRules"][0]["access"] == "allow"
    back = wire.spec_to_arm(canonical)["networkConfiguration"]["endpointConfiguration"]["inboundNatPools"][0]
    assert back["protocol"] == "TCP" and back["networkSecurityGroupRules"][0]["access"] == "Allow"
    bad = copy.deepcopy(props)
    bad["networkConfiguration"]["endpointConfiguration"]["inboundNatPools"][0]["backendPort"] = 29876
    assert_refused(wire.spec_from_arm(bad), f"{PATH}[0].backendPort", "reserved by Batch")


# --- the pool-level rules -----------------------------------------------------------------------------------------
def test_more_than_five_nat_pools_are_refused() -> None:
    six = [nat(f"p{i}", backend=1000 + i, start=1000 + 100 * i, end=1099 + 100 * i) for i in range(6)]
    assert_refused(spec(*six), PATH, "at most 5 inbound NAT pools; remove 1")


def test_nat_pools_are_refused_without_public_ip_addresses() -> None:
    s = spec(nat(), publicIPAddressConfiguration={"provision": "nopublicipaddresses"})
    assert_refused(s, PATH, "cannot be used when networkConfiguration.publicIPAddressConfiguration.provision is "
                   "nopublicipaddresses")
    pools.validate_spec(spec(publicIPAddressConfiguration={"provision": "nopublicipaddresses"}))
    pools.validate_spec(spec(nat(), publicIPAddressConfiguration={"provision": "batchmanaged"}))


def test_endpoint_configuration_needs_a_list_of_nat_pools() -> None:
    s = spec()
    s["networkConfiguration"]["endpointConfiguration"] = {}
    assert_refused(s, PATH, "required property", code="MissingRequiredProperty")
    s["networkConfiguration"]["endpointConfiguration"] = {"inboundNATPools": {"name": "ssh"}}
    assert_refused(s, PATH, "a list of inbound NAT pools")
    assert_refused(spec("ssh"), f"{PATH}[0]", "an inbound NAT pool object")  # type: ignore[arg-type]


# --- names ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["-ssh", "_ssh", ".ssh", "ssh-", "ssh.", "ss h", "ssh!", "ssh/0"])
def test_malformed_names_are_refused(name: str) -> None:
    assert_refused(spec(nat(name)), f"{PATH}[0].name", "starting with a letter or digit and ending with a letter, "
                   "digit or underscore")


def test_names_are_required_at_most_77_characters_and_unique() -> None:
    missing = nat()
    del missing["name"]
    assert_refused(spec(missing), f"{PATH}[0].name", "required property", code="MissingRequiredProperty")
    assert_refused(spec(nat("x" * 78)), f"{PATH}[0].name", "at most 77 characters")
    assert_refused(spec(nat("ssh"), nat("SSH", backend=23, start=16000, end=16099)), f"{PATH}[1].name",
                   "inboundNATPools[0] ('ssh') already has this name")


# --- protocol and backend ports -----------------------------------------------------------------------------------
def test_protocol_must_be_tcp_or_udp() -> None:
    assert_refused(spec(nat(protocol="icmp")), f"{PATH}[0].protocol", "tcp or udp")
    no_protocol = nat()
    del no_protocol["protocol"]
    assert_refused(spec(no_protocol), f"{PATH}[0].protocol", "required", code="MissingRequiredProperty")


@pytest.mark.parametrize(("port", "reason"), [
    (0, "between 1 and 65535"), (65536, "between 1 and 65535"), ("22", "an integer is required"),
    (True, "an integer is required"), (29876, "29876 and 29877 are reserved by Batch"),
    (29877, "29876 and 29877 are reserved by Batch")])
def test_bad_backend_ports_are_refused(port: Any, reason: str) -> None:
    assert_refused(spec(nat(backend=port)), f"{PATH}[0].backendPort", reason)


def test_backend_ports_are_unique_across_nat_pools() -> None:
    assert_refused(spec(nat("ssh"), nat("web", backend=80, start=16000, end=16099),
                        nat("ssh2", backend=22, start=17000, end=17099)), f"{PATH}[2].backendPort",
                   "inboundNATPools[0] ('ssh') already uses this backend port")


# --- frontend port ranges -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("start", "end", "prop", "reason"), [
    (0, 100, "frontendPortRangeStart", "between 1 and 65534"),
    (65000, 65535, "frontendPortRangeEnd", "between 1 and 65534"),
    (50000, 50100, "frontendPortRangeStart", "50000-55000 are reserved by Batch"),
    (55000, 55100, "frontendPortRangeStart", "50000-55000 are reserved by Batch"),
    (49960, 50000, "frontendPortRangeEnd", "50000-55000 are reserved by Batch"),
    (40000, 60000, "frontendPortRangeEnd", "includes ports 50000-55000"),
    (15100, 15000, "frontendPortRangeEnd", "must not be less than frontendPortRangeStart (15100)"),
    (15000, 15038, "frontendPortRangeEnd", "at least 40 ports, 15000-15038 has 39; set frontendPortRangeEnd to "
                                           "15039 or more"),
    (15000, 15000, "frontendPortRangeEnd", "at least 40 ports"),
    (49961, 49999, "frontendPortRangeEnd", "49961-49999 has 39; start the range lower"),
    (65500, 65534, "frontendPortRangeEnd", "65500-65534 has 35; start the range lower"),
    (55001, 55002, "frontendPortRangeEnd", "set frontendPortRangeEnd to 55040 or more"),
])
def test_bad_frontend_port_ranges_are_refused(start: int, end: int, prop: str, reason: str) -> None:
    assert_refused(spec(nat(start=start, end=end)), f"{PATH}[0].{prop}", reason)


def test_frontend_ranges_are_required() -> None:
    for key in ("frontendPortRangeStart", "frontendPortRangeEnd", "backendPort"):
        n = nat()
        del n[key]
        assert_refused(spec(n), f"{PATH}[0].{key}", "required", code="MissingRequiredProperty")


def test_overlapping_frontend_ranges_are_refused_and_adjacent_ones_accepted() -> None:
    pools.validate_spec(spec(nat("a", 22, 15000, 15039), nat("b", 80, 15040, 15079)))
    assert_refused(spec(nat("a", 22, 15000, 15099), nat("b", 80, 15099, 15199)), f"{PATH}[1].frontendPortRangeStart",
                   "the range 15099-15199 overlaps 15000-15099 of inboundNATPools[0] ('a')")
    assert_refused(spec(nat("a", 22, 15000, 15999), nat("b", 80, 15100, 15199)), f"{PATH}[1].frontendPortRangeStart",
                   "must not overlap")


# --- network security group rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("bad", "field", "reason", "code"), [
    ({"priority": 149}, "priority", "between 150 and 4096", "InvalidPropertyValue"),
    ({"priority": 4097}, "priority", "between 150 and 4096", "InvalidPropertyValue"),
    ({"priority": None}, "priority", "required", "MissingRequiredProperty"),
    ({"access": "permit"}, "access", "allow or deny", "InvalidPropertyValue"),
    ({"access": None}, "access", "required", "MissingRequiredProperty"),
    ({"sourceAddressPrefix": None}, "sourceAddressPrefix", "required", "MissingRequiredProperty"),
    ({"sourceAddressPrefix": ""}, "sourceAddressPrefix", "required", "MissingRequiredProperty"),
    ({"sourceAddressPrefix": "10.0.0.300"}, "sourceAddressPrefix", "a single IP address", "InvalidPropertyValue"),
    ({"sourceAddressPrefix": "10.0.0.0/33"}, "sourceAddressPrefix", "an IP subnet", "InvalidPropertyValue"),
    ({"sourceAddressPrefix": "Internets"}, "sourceAddressPrefix", "a default tag", "InvalidPropertyValue"),
    ({"sourcePortRanges": ["70000"]}, "sourcePortRanges[0]", "within 0-65535", "InvalidPropertyValue"),
    ({"sourcePortRanges": ["200-100"]}, "sourcePortRanges[0]", "a range such as 100-200", "InvalidPropertyValue"),
    ({"sourcePortRanges": ["22", "ssh"]}, "sourcePortRanges[1]", "a port such as 22", "InvalidPropertyValue"),
    ({"sourcePortRanges": ["100-200", "150"]}, "sourcePortRanges[1]", "overlaps '100-200'", "InvalidPropertyValue"),
    ({"sourcePortRanges": ["*", "22"]}, "sourcePortRanges[1]", "must not overlap each other", "InvalidPropertyValue"),
    ({"sourcePortRanges": "22"}, "sourcePortRanges", "a list of port ranges", "InvalidPropertyValue"),
])
def test_bad_network_security_group_rules_are_refused(bad: dict[str, Any], field: str, reason: str,
                                                      code: str) -> None:
    r = {**rule(), **bad}
    r = {k: v for k, v in r.items() if v is not None}
    assert_refused(spec(nat(rules=[rule(200), r])), f"{PATH}[0].networkSecurityGroupRules[1].{field}", reason, code)


def test_rule_priorities_are_unique_within_the_pool() -> None:
    assert_refused(spec(nat(rules=[rule(150), rule(150)])), f"{PATH}[0].networkSecurityGroupRules[1].priority",
                   "inboundNATPools[0].networkSecurityGroupRules[0] already has this priority")
    assert_refused(spec(nat("a", rules=[rule(300)]), nat("b", 80, 16000, 16099, rules=[rule(300)])),
                   f"{PATH}[1].networkSecurityGroupRules[0].priority", "priorities must be unique within the pool")


def test_at_most_25_rules_across_all_nat_pools() -> None:
    pools.validate_spec(spec(nat("a", rules=[rule(150 + i) for i in range(13)]),
                             nat("b", 80, 16000, 16099, rules=[rule(300 + i) for i in range(12)])))
    assert_refused(spec(nat("a", rules=[rule(150 + i) for i in range(13)]),
                        nat("b", 80, 16000, 16099, rules=[rule(300 + i) for i in range(13)])),
                   f"{PATH}[1].networkSecurityGroupRules", "at most 25 network security group rules across all "
                   "inbound NAT pools of a pool, these make 26; remove 1")


def test_messages_say_what_is_wrong_and_what_to_do() -> None:
    err = refusal(spec(nat(start=50000, end=50100)))
    assert err.message == ("The value provided for one of the properties in the request body is invalid: "
                           f"{PATH}[0].frontendPortRangeStart (ports 50000-55000 are reserved by Batch; choose a "
                           "frontend port range outside them).")
    assert err.values == {"PropertyName": f"{PATH}[0].frontendPortRangeStart", "PropertyValue": "50000",
                          "Reason": "ports 50000-55000 are reserved by Batch; choose a frontend port range outside "
                                    "them"}


# --- capacity and endpoints ---------------------------------------------------------------------------------------
def test_node_capacity_is_the_smallest_range() -> None:
    assert natpools.node_capacity(spec()) is None
    assert natpools.node_capacity({"vmSize": "x"}) is None
    assert natpools.node_capacity(spec(nat(start=15000, end=15099))) == 100
    assert natpools.node_capacity(spec(nat("a", 22, 15000, 15099), nat("b", 80, 20000, 20039),
                                       nat("c", 81, 30000, 39999))) == 40


def test_nodes_get_the_lowest_free_index_in_every_nat_pool() -> None:
    s = spec(nat("ssh", 22, 15000, 15099), nat("web", 8080, 20000, 20039, protocol="udp"))
    used: set[int] = set()
    first = natpools.assign(s, used, "127.0.0.1", "shoal.local")
    assert first == [
        {"name": "ssh.0", "protocol": "tcp", "publicIPAddress": "127.0.0.1", "publicFQDN": "shoal.local",
         "frontendPort": 15000, "backendPort": 22},
        {"name": "web.0", "protocol": "udp", "publicIPAddress": "127.0.0.1", "publicFQDN": "shoal.local",
         "frontendPort": 20000, "backendPort": 8080}]
    second = natpools.assign(s, used, "127.0.0.1", "shoal.local")
    third = natpools.assign(s, used, "127.0.0.1", "shoal.local")
    assert [e["frontendPort"] for e in third] == [15002, 20002] and used == {0, 1, 2}
    # The node holding index 1 leaves: the next node gets its ports.
    held = [natpools.node_index(e) for e in (first, third)]
    assert natpools.node_index(second) == 1 and held == [0, 2]
    again = natpools.assign(s, {0, 2}, "127.0.0.1", "shoal.local")
    assert [e["name"] for e in again] == ["ssh.1", "web.1"] and [e["frontendPort"] for e in again] == [15001, 20001]


def test_no_endpoints_without_nat_pools_or_once_the_smallest_range_is_used_up() -> None:
    assert natpools.assign(spec(), set(), "127.0.0.1", "h") == []
    assert natpools.node_index([]) is None
    s = spec(nat("ssh", 22, 15000, 15039))
    assert natpools.assign(s, set(range(40)), "127.0.0.1", "h") == []
    assert natpools.node_index(natpools.assign(s, set(range(39)), "127.0.0.1", "h")) == 39


def test_names_with_periods_keep_their_index() -> None:
    s = spec(nat("ssh.v2", 22, 15000, 15099))
    assert natpools.node_index(natpools.assign(s, {0, 1}, "127.0.0.1", "h")) == 2


@st.composite
def layouts(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """Up to five non-overlapping valid ranges and a number of nodes to place."""
    count = draw(st.integers(1, 5))
    cuts = sorted(draw(st.sets(st.integers(0, 400), min_size=count, max_size=count)))
    nats = [nat(f"n{i}", 1000 + i, 1000 + 500 * i + c, 1000 + 500 * i + c + draw(st.integers(39, 80)))
            for i, c in enumerate(cuts)]
    return spec(*nats), draw(st.integers(0, 45))


@given(layouts(), st.sets(st.integers(0, 50), max_size=20))
def test_every_node_gets_distinct_ports_inside_every_range(layout: tuple[dict[str, Any], int],
                                                           taken: set[int]) -> None:
    s, new_nodes = layout
    pools.validate_spec(s)
    capacity = natpools.node_capacity(s)
    assert capacity is not None
    used = set(taken)
    made = [natpools.assign(s, used, "127.0.0.1", "h") for _ in range(new_nodes)]
    made = [m for m in made if m]
    assert len(made) == min(new_nodes, capacity - len({i for i in taken if i < capacity}))
    for k, nat_pool in enumerate(natpools.nat_pools(s)):
        ports = [m[k]["frontendPort"] for m in made]
        assert len(set(ports)) == len(ports)
        assert all(nat_pool["frontendPortRangeStart"] <= p <= nat_pool["frontendPortRangeEnd"] for p in ports)
        assert all(p - nat_pool["frontendPortRangeStart"] not in taken for p in ports)
