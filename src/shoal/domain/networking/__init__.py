"""``Microsoft.Network``: virtual networks and subnets, network security groups, public IP addresses and network
interfaces, as records tied to the real addresses of Shoal's machines.

How Azure's addresses map onto Shoal's machine networks (``domain/network.py``): every subnet of a virtual
network is given a ``/20`` subnet of the server's node address space of its own (the same pool of ``/20``s pool
subnets come from), for its life. The ``addressPrefix`` a caller declares is kept and checked as Azure checks
it (inside the VNet's address space, no overlap with the VNet's other subnets) but is a label: the addresses
machines really have are those of the mapped ``/20``. A network interface's ``privateIPAddress`` is such a real
address (given when the interface is created, as Azure does, and kept), and a VM whose primary interface it is
boots with exactly that address, so what ``ip addr`` shows inside the VM is what the NIC reports. A static
``privateIPAddress`` inside the declared prefix is taken at the same offset of the mapped subnet.

A public IP address gets a host-reachable address (from the space's last ``/20``, above the addresses pools'
inbound NAT endpoints use); once it is on the primary interface of a VM, the host forwards every port of it to
the VM (one-to-one NAT). Network security groups on the interface and on its subnet filter inbound traffic to
the VM on the host (nftables), with Azure's default rules; ``records.py`` keeps the records,
``machines.py`` ties them to VMs and compiles what the host enforces.
"""
