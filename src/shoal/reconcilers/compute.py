"""Completes Microsoft.Compute operations through the host agent.

Each handler is idempotent (a crash re-runs it): it reads the resource, does the slow work outside any
transaction, then writes the result back. A failure marks the resource ``Failed`` and the operation
``Failed`` with an error the SDKs surface.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from shoal.core import errors, ids
from shoal.core.clock import Clock
from shoal.core.hosterrors import AgentError, LayerError
from shoal.domain import host_ssh, network, resources
from shoal.domain.batch import vmsizes
from shoal.domain.compute import content as ct
from shoal.domain.compute import galleries, linux_agent, service, sources, vms
from shoal.domain.compute.kinds import ResourceKind
from shoal.domain.host import HostAgent
from shoal.domain.networking import machines as networking
from shoal.reconcilers.operations import Handler, OperationWork, Outcome
from shoal.store import models
from shoal.store.db import Database

log = logging.getLogger(__name__)

GUEST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


class ComputeWork:
    def __init__(self, db: Database, clock: Clock, agent: HostAgent,
                 address_space: str = network.DEFAULT_SPACE, *, host_address: str | None = None) -> None:
        self.db, self.clock, self.agent = db, clock, agent
        self.address_space = address_space  # VMs get their addresses on its default subnet
        # Set when machines share the host's network: clients reach VMs there, each sshd on a port of its own.
        self.host_address = host_address
        self._deprovisioning = threading.Lock()  # one deprovisioning boot of a generalized VM at a time

    # --- helpers ------------------------------------------------------------------------------------------
    def _load(self, resource_id: str) -> models.Resource | None:
        with self.db.read() as s:
            return resources.find(s, ids.parse(resource_id))

    def _update(self, resource_id: str, fn: Callable[[models.Resource], None]) -> None:
        with self.db.write() as s:
            row = resources.find(s, ids.parse(resource_id))
            if row is not None:
                fn(row)
                resources.touch(row, self.clock)

    def _succeed(self, resource_id: str, **internal: Any) -> None:
        def apply(row: models.Resource) -> None:
            row.internal = {**row.internal, **internal}
            row.provisioning_state = "Succeeded"

        self._update(resource_id, apply)

    def _fail(self, resource_id: str, message: str) -> errors.AzureError:
        def apply(row: models.Resource) -> None:
            row.provisioning_state = "Failed"

        self._update(resource_id, apply)
        return errors.OperationFailed(message, status=500 if "unexpected" in message else 400)

    def _delete_row(self, resource_id: str) -> None:
        with self.db.write() as s:
            row = resources.find(s, ids.parse(resource_id))
            if row is not None:
                s.delete(row)

    def guarded(self, fn: Callable[[OperationWork], Outcome]) -> Handler:
        def run(work: OperationWork) -> Outcome:
            try:
                return fn(work)
            except AgentError as exc:
                return Outcome(True, error=self._fail(work.target_id, str(exc)))
            except LayerError as exc:
                self._fail(work.target_id, str(exc))
                return Outcome(True, error=errors.InvalidParameter(
                    f"The disk file was refused: {exc}. A disk file must be a tar archive (optionally gzip, xz or "
                    "zstd compressed) of regular files, directories and links that stay inside its root."))
            except errors.AzureError as exc:
                self._fail(work.target_id, exc.message)
                return Outcome(True, error=exc)
            except Exception as exc:
                log.exception("compute operation %s failed", work.kind)
                return Outcome(True, error=self._fail(work.target_id, f"The operation failed unexpectedly: {exc}"))

        return run

    # --- disks and snapshots --------------------------------------------------------------------------------
    def capture_copy(self, work: OperationWork) -> Outcome:
        """Disk or snapshot ``Copy`` from a disk: the source's upper becomes a layer on top of its stack."""
        digest = self._capture_disk(str(work.payload["sourceDisk"]))
        row = self._load(work.target_id)
        if row is None:
            return Outcome(True)
        layers = list(row.internal.get("layers") or []) + ([digest] if digest else [])
        if row.type_key == sources.DISKS.lower():
            self.agent.prepare_disk(row.internal["upper"])
        self._succeed(work.target_id, layers=layers)
        return Outcome(True)

    def _capture_disk(self, disk_id: str) -> str | None:
        disk = self._load(disk_id)
        if disk is None:
            raise errors.NotFound(f"The source disk '{disk_id}' no longer exists.")
        if disk.internal.get("os") and disk.internal.get("attachedTo"):
            self.deprovision(str(disk.internal["attachedTo"]))
        return self.agent.capture_disk(disk.internal["upper"])

    def import_file(self, work: OperationWork) -> Outcome:
        try:
            digest = self.agent.import_disk_file(str(work.payload["sourceUri"]))
        except AgentError as exc:  # about the sourceUri the request gave: a bad parameter
            self._fail(work.target_id, str(exc))
            return Outcome(True, error=errors.InvalidParameter(str(exc)))
        row = self._load(work.target_id)
        if row is None:
            return Outcome(True)
        if work.payload.get("osType"):
            base = {"imported": digest}
            self._succeed(work.target_id, base=base, layers=[], os=True)
        else:
            self._succeed(work.target_id, layers=[digest])
        if row.type_key == sources.DISKS.lower():
            self.agent.prepare_disk(row.internal["upper"])
        return Outcome(True)

    def delete_disk(self, work: OperationWork) -> Outcome:
        row = self._load(work.target_id)
        if row is not None and row.internal.get("upper"):
            self.agent.delete_disk(row.internal["upper"])
        self._delete_row(work.target_id)
        return Outcome(True)

    def delete_plain(self, work: OperationWork) -> Outcome:
        self._delete_row(work.target_id)
        return Outcome(True)

    def grant_access(self, work: OperationWork) -> Outcome:
        """beginGetAccess: export the disk (or snapshot) as a downloadable disk file behind a secret URL."""
        row = self._load(work.target_id)
        if row is None:
            raise errors.NotFound("The disk no longer exists.")
        token = str(work.payload["token"])
        if row.internal.get("os") and row.internal.get("attachedTo"):
            self.deprovision(str(row.internal["attachedTo"]))
        self.agent.export_disk(token, row.internal.get("base"), list(row.internal.get("layers") or []),
                               row.internal.get("upper"))

        def record(r: models.Resource) -> None:
            r.internal = {**r.internal, "access": {"token": token}}

        self._update(work.target_id, record)
        return Outcome(True, result={"accessSAS": f"{work.payload['baseUrl']}/downloads/{token}/disk.tar"})

    def revoke_access(self, work: OperationWork) -> Outcome:
        row = self._load(work.target_id)
        if row is not None and row.internal.get("access"):
            self.agent.revoke_export(row.internal["access"]["token"])

            def clear(r: models.Resource) -> None:
                r.internal = {k: v for k, v in r.internal.items() if k != "access"}

            self._update(work.target_id, clear)
        return Outcome(True)

    # --- images --------------------------------------------------------------------------------------------
    def build_image(self, work: OperationWork) -> Outcome:
        """Finish an image whose sources need work: attached disks to capture, disk files to import."""
        row = self._load(work.target_id)
        if row is None:
            return Outcome(True)
        internal = dict(row.internal)
        os_import = work.payload.get("osImport")
        if os_import:
            digest = self.agent.import_disk_file(os_import["sourceUri"])
            internal.update({"base": {"imported": digest}, "os": []})
        data = dict(internal.get("data") or {})
        for lun, imp in (work.payload.get("dataImports") or {}).items():
            data[lun] = [self.agent.import_disk_file(imp["sourceUri"])]
        for disk_id in work.payload.get("captureDisks") or []:
            captured = self._capture_disk(disk_id)
            if captured:
                digest = captured
                disk = self._load(disk_id)
                if disk is not None and disk.internal.get("os"):
                    internal["os"] = [*list(internal.get("os") or []), digest]
                else:
                    for lun, stack in data.items():
                        if disk is not None and stack == list(disk.internal.get("layers") or []):
                            data[lun] = [*stack, digest]
        internal["data"] = data
        self._succeed(work.target_id, **internal)
        return Outcome(True)

    def capture_vm_content(self, vm_id: str) -> dict[str, Any]:
        """Capture a stopped VM's OS and data disks: their uppers become layers on top of their stacks."""
        self.deprovision(vm_id)
        vm = self._load(vm_id)
        if vm is None:
            raise errors.NotFound("The source VM no longer exists.")
        os_disk = self._load(vm.internal["osDisk"])
        if os_disk is None:
            raise errors.NotFound("The source VM's OS disk no longer exists.")
        os_digest = self.agent.capture_disk(os_disk.internal["upper"])
        data: dict[str, list[str]] = {}
        for lun, disk_id in (vm.internal.get("dataDisks") or {}).items():
            disk = self._load(disk_id)
            if disk is None:
                continue
            digest = self.agent.capture_disk(disk.internal["upper"])
            data[str(lun)] = list(disk.internal.get("layers") or []) + ([digest] if digest else [])
        return {"base": os_disk.internal.get("base"),
                "os": list(os_disk.internal.get("layers") or []) + ([os_digest] if os_digest else []),
                "data": data, "osType": os_disk.properties.get("osType", "Linux"),
                "lineage": ct.derive(os_disk.internal.get("lineage"), method=ct.METHOD_VM_CAPTURE, sourceVm=vm.id)}

    def capture_vm(self, work: OperationWork) -> Outcome:
        """An image from a generalized VM."""
        content = self.capture_vm_content(str(work.payload["sourceVm"]))
        self._succeed(work.target_id, **content)

        def wire(row: models.Resource) -> None:
            profile = dict(row.properties.get("storageProfile") or {})
            profile["dataDisks"] = [{"lun": int(lun), "caching": "None", "storageAccountType": "Standard_LRS"}
                                    for lun in sorted(content["data"], key=int)]
            row.properties = {**row.properties, "storageProfile": profile}

        self._update(work.target_id, wire)
        return Outcome(True)

    # --- gallery versions -----------------------------------------------------------------------------------
    def replicate(self, work: OperationWork) -> Outcome:
        row = self._load(work.target_id)
        if row is None:
            return Outcome(True)
        if row.internal.get("captureVm"):
            content = self.capture_vm_content(row.internal["captureVm"])

            def captured(r: models.Resource) -> None:
                r.internal = {**{k: v for k, v in r.internal.items() if k != "captureVm"}, **content}

            self._update(work.target_id, captured)
            row = self._load(work.target_id)
            assert row is not None
        os_stack, data_stacks = list(row.internal.get("os") or []), dict(row.internal.get("data") or {})
        uid = row.internal["uniqueId"]
        for region, rep in (row.internal.get("replicas") or {}).items():
            for n in range(int(rep["ready"]), int(rep["target"])):
                self.agent.prepare_replica(region, galleries.replica_id(uid, n), os_stack, data_stacks)

                def progress(r: models.Resource, region: str = region, n: int = n) -> None:
                    reps = {k: dict(v) for k, v in r.internal["replicas"].items()}
                    reps[region]["ready"] = n + 1
                    r.internal = {**r.internal, "replicas": reps}

                self._update(work.target_id, progress)
        self._succeed(work.target_id)
        return Outcome(True)

    def delete_version(self, work: OperationWork) -> Outcome:
        row = self._load(work.target_id)
        if row is not None and row.internal.get("uniqueId"):
            self.agent.delete_replicas(row.internal["uniqueId"])
        self._delete_row(work.target_id)
        return Outcome(True)

    # --- virtual machines -----------------------------------------------------------------------------------
    def machine_of(self, vm: models.Resource) -> dict[str, Any]:
        def disk(disk_id: str) -> dict[str, Any]:
            row = self._load(disk_id)
            if row is None:
                raise errors.NotFound(f"The disk '{disk_id}' of VM '{vm.name}' no longer exists.")
            return {"layers": list(row.internal.get("layers") or []), "upper": row.internal["upper"],
                    "base": row.internal.get("base")}

        os_disk = disk(vm.internal["osDisk"])
        if not os_disk["base"]:
            raise errors.InvalidParameter(f"The OS disk of VM '{vm.name}' has no bootable base.")
        return {"machineId": vm.internal["machineId"], "hostname": vm.internal.get("hostname", vm.name),
                "base": os_disk["base"], "osDisk": os_disk,
                "dataDisks": {lun: disk(d) for lun, d in (vm.internal.get("dataDisks") or {}).items()},
                "network": self._network(vm),
                "limits": vmsizes.machine_limits(str((vm.properties.get("hardwareProfile") or {}).get("vmSize")))}

    def _network(self, vm: models.Resource) -> dict[str, Any]:
        """A VM with a network interface boots with the interface's address on its subnet; others get one on
        the default subnet of VMs."""
        with self.db.read() as s:
            found = networking.machine_network(s, vm, self.address_space)
        if found is not None:
            return found
        return network.machine_network(self._address(vm), network.vm_subnet(self.address_space), self.address_space)

    def _address(self, vm: models.Resource) -> str:
        """The VM's private address on the default subnet (given on its first boot, kept for its life)."""
        found = vm.internal.get("ipAddress")
        if found:
            return str(found)
        with self.db.write() as s:
            row = resources.find(s, ids.parse(vm.id))
            if row is None:
                raise errors.NotFound("The VM no longer exists.")
            if not row.internal.get("ipAddress"):
                used = [r.internal.get("ipAddress") for r in s.scalars(
                    select(models.Resource).where(models.Resource.type_key == sources.VMS.lower()))]
                address = network.allocate_addresses(network.vm_subnet(self.address_space), used, 1)[0]
                row.internal = {**row.internal, "ipAddress": address}
            return str(row.internal["ipAddress"])

    def _set_power(self, vm_id: str, power: str, *, succeeded: bool = False) -> None:
        def apply(row: models.Resource) -> None:
            row.internal = {**row.internal, "power": power, "isolation": self.agent.isolation}
            if succeeded:
                row.provisioning_state = "Succeeded"

        self._update(vm_id, apply)

    def create_vm(self, work: OperationWork) -> Outcome:
        vm = self._load(work.target_id)
        if vm is None:
            return Outcome(True)
        self.agent.boot(self.machine_of(vm))
        self.provision_guest(vm)
        with self.db.write() as s:
            for disk_id in [vm.internal["osDisk"], *(vm.internal.get("dataDisks") or {}).values()]:
                disk = resources.find(s, ids.parse(disk_id))
                if disk is not None and disk.provisioning_state != "Succeeded":
                    disk.provisioning_state = "Succeeded"
        self._set_power(work.target_id, vms.POWER_RUNNING, succeeded=True)
        return Outcome(True)

    def power(self, action: str) -> Callable[[OperationWork], Outcome]:
        def handle(work: OperationWork) -> Outcome:
            vm = self._load(work.target_id)
            if vm is None:
                raise errors.NotFound("The VM no longer exists.")
            machine_id = vm.internal["machineId"]
            if action in ("powerOff", "deallocate", "restart"):
                self.agent.halt(machine_id)
            if action in ("start", "restart"):
                self.agent.boot(self.machine_of(vm))
                self.start_guest_services(vm)
            power = {"powerOff": vms.POWER_STOPPED, "deallocate": vms.POWER_DEALLOCATED}.get(action, vms.POWER_RUNNING)
            self._set_power(work.target_id, power)
            return Outcome(True)

        return handle

    # --- the guest agent: provisioning, sshd and deprovisioning (domain/compute/linux_agent.py) ---------------
    def _guest(self, vm: models.Resource, script: str) -> dict[str, Any] | None:
        """Run a guest-agent script in the VM as its root. None where machines are not namespaced: commands
        there are plain processes of an unprivileged host user, with no system of their own to provision."""
        if self.agent.isolation != "namespaces":
            return None
        return self.agent.run(vm.internal["machineId"], ["/bin/sh", "-c", script], env=dict(GUEST_ENV), cwd="/",
                              timeout=300)

    def provision_guest(self, vm: models.Resource) -> None:
        """A VM's first boot with an osProfile: host keys of its own, the admin user, then sshd."""
        provisioning = vm.internal.get("provisioning")
        if not provisioning:
            return
        result = self._guest(vm, linux_agent.first_boot_script(provisioning))
        if result is not None and int(result.get("exitCode", -1)) != 0:
            raise errors.OperationFailed(
                f"OS provisioning failed for VM '{vm.name}' due to an error reported by the guest: "
                f"{_text(result.get('stderr'))[-2000:].strip() or 'exit code ' + str(result.get('exitCode'))}")

        def done(row: models.Resource) -> None:  # the password is set: its hash is not kept any longer
            kept = {k: v for k, v in (row.internal.get("provisioning") or {}).items() if k != "passwordHash"}
            row.internal = {**row.internal, "provisioning": kept}

        self._update(vm.id, done)
        self.start_guest_services(vm)

    def start_guest_services(self, vm: models.Resource) -> None:
        """At each boot of a provisioned VM: the image's OpenSSH server, on port 22 of the VM's own network, or
        when machines share the host's network on the VM's own port of the host (``domain/host_ssh.py``)."""
        if not vm.internal.get("provisioning"):
            return
        port = None
        if self.host_address is not None and self.agent.isolation == "namespaces":
            port = self._ssh_port(vm)
        elif self.agent.gateway is None:
            return  # no network of its own, no port of its own (the process runtime runs no sshd)
        result = self._guest(vm, linux_agent.boot_script(port))
        if result is not None and int(result.get("exitCode", -1)) != 0:
            log.warning("VM %s: sshd did not start: %s", vm.id, _text(result.get("stderr")).strip())
        elif port is not None:
            log.info("VM %s: sshd listens on port %d of the host: ssh -p %d %s@%s", vm.id, port, port,
                     vm.internal["provisioning"].get("adminUsername"), self.host_address)

    def _ssh_port(self, vm: models.Resource) -> int:
        """The VM's SSH port on the host: chosen and recorded at its first boot, the same ever after."""
        if vm.internal.get(host_ssh.VM_KEY):
            return int(vm.internal[host_ssh.VM_KEY])
        with self.db.write() as s:
            row = resources.find(s, ids.parse(vm.id))
            if row is None:
                raise errors.NotFound("The VM no longer exists.")
            port = host_ssh.vm_port(s, row, self.agent.listening_ports)
            resources.touch(row, self.clock)
            return port

    def deprovision(self, vm_id: str) -> None:
        """``waagent -deprovision+user`` on a generalized VM's OS disk before anything captures or exports it:
        the VM boots for a moment (the machines loop keeps its machine while the flag is set), the script runs,
        the VM stops again."""
        vm = self._load(vm_id)
        if vm is None or not vm.internal.get("deprovision"):
            return
        with self._deprovisioning:
            vm = self._load(vm_id)
            if vm is None or not vm.internal.get("deprovision"):
                return
            if self.agent.isolation == "namespaces":
                machine_id = vm.internal["machineId"]
                self.agent.boot(self.machine_of(vm))
                try:
                    user = (vm.internal.get("provisioning") or {}).get("adminUsername")
                    result = self._guest(vm, linux_agent.deprovision_script(user))
                finally:
                    self.agent.halt(machine_id)
                if result is not None and int(result.get("exitCode", -1)) != 0:
                    raise errors.OperationFailed(f"Deprovisioning the generalized VM '{vm.name}' failed: "
                                                 f"{_text(result.get('stderr'))[-2000:].strip()}")

            def done(row: models.Resource) -> None:
                row.internal = {k: v for k, v in row.internal.items() if k not in ("deprovision", "provisioning")}

            self._update(vm_id, done)

    def run_command(self, work: OperationWork) -> Outcome:
        vm = self._load(work.target_id)
        if vm is None:
            raise errors.NotFound("The VM no longer exists.")
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
               "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
               **{str(k): str(v) for k, v in (work.payload.get("parameters") or {}).items()}}
        result = self.agent.run(vm.internal["machineId"], vms.script_argv(list(work.payload.get("script") or [])),
                                env=env, cwd="/root", timeout=5400)
        out = _text(result.get("stdout"))
        err = _text(result.get("stderr"))
        code = int(result.get("exitCode", -1))
        if result.get("timedOut"):
            err += "\nThe script was stopped after the run-command time limit (90 minutes)."
        return Outcome(True, result=vms.run_command_result(code, out, err))

    def delete_vm(self, work: OperationWork) -> Outcome:
        vm = self._load(work.target_id)
        if vm is None:
            return Outcome(True)
        self.agent.halt(vm.internal["machineId"])
        os_delete = ((vm.properties.get("storageProfile") or {}).get("osDisk") or {}).get("deleteOption") == "Delete"
        data_opts = {str(d["lun"]): d.get("deleteOption") for d in
                     (vm.properties.get("storageProfile") or {}).get("dataDisks") or []}
        removed: list[str] = []  # the deleted disks' writable layers, removed from the host once committed
        with self.db.write() as s:
            for lun_or_os, disk_id in [("os", vm.internal["osDisk"]), *(vm.internal.get("dataDisks") or {}).items()]:
                disk = resources.find(s, ids.parse(disk_id))
                if disk is None:
                    continue
                remove = os_delete if lun_or_os == "os" else data_opts.get(lun_or_os) == "Delete"
                if remove:
                    removed.append(disk.internal["upper"])
                    s.delete(disk)
                else:
                    disk.internal = {**disk.internal, "attachedTo": None}
                    resources.touch(disk, self.clock)
            for ext in resources.children(s, ids.parse(vm.id)):
                s.delete(ext)
            row = resources.find(s, ids.parse(vm.id))
            if row is not None:
                networking.release(s, self.clock, self.address_space, row)  # its NICs' deleteOption
                s.delete(row)
        for upper in removed:
            self.agent.delete_disk(upper)
        return Outcome(True)

    # --- registry -------------------------------------------------------------------------------------------
    def handlers(self, kinds: dict[str, ResourceKind]) -> dict[str, Handler]:
        k = {name: kind for name, kind in kinds.items()}
        table: dict[str, Callable[[OperationWork], Outcome]] = {
            service.op_kind(k["disks"], "capture"): self.capture_copy,
            service.op_kind(k["disks"], "import"): self.import_file,
            service.op_kind(k["disks"], "delete"): self.delete_disk,
            service.op_kind(k["snapshots"], "capture"): self.capture_copy,
            service.op_kind(k["snapshots"], "import"): self.import_file,
            service.op_kind(k["snapshots"], "delete"): self.delete_plain,
            service.op_kind(k["images"], "build"): self.build_image,
            service.op_kind(k["images"], "capture-vm"): self.capture_vm,
            service.op_kind(k["images"], "delete"): self.delete_plain,
            service.op_kind(k["galleries"], "delete"): self.delete_plain,
            service.op_kind(k["galleries/images"], "delete"): self.delete_plain,
            service.op_kind(k["galleries/images/versions"], "replicate"): self.replicate,
            service.op_kind(k["galleries/images/versions"], "delete"): self.delete_version,
            service.op_kind(k["virtualMachines"], "create"): self.create_vm,
            service.op_kind(k["virtualMachines"], "delete"): self.delete_vm,
            service.op_kind(k["virtualMachines"], "runCommand"): self.run_command,
            service.op_kind(k["virtualMachines/extensions"], "delete"): self.delete_plain,
        }
        for action in ("start", "powerOff", "restart", "deallocate"):
            table[service.op_kind(k["virtualMachines"], action)] = self.power(action)
        for collection in ("disks", "snapshots"):
            table[service.op_kind(k[collection], "beginGetAccess")] = self.grant_access
            table[service.op_kind(k[collection], "endGetAccess")] = self.revoke_access
        # Actions must not mark their resource Failed when they fail (only creation does).
        guarded = {name: self.guarded(fn) for name, fn in table.items()}
        actions = [service.op_kind(k["virtualMachines"], a) for a in
                   ("start", "powerOff", "restart", "deallocate", "runCommand")]
        actions += [service.op_kind(k[c], a) for c in ("disks", "snapshots")
                    for a in ("beginGetAccess", "endGetAccess")]
        for name in actions:
            guarded[name] = self._plain(table[name])
        return guarded

    @staticmethod
    def _plain(fn: Callable[[OperationWork], Outcome]) -> Handler:
        def run(work: OperationWork) -> Outcome:
            try:
                return fn(work)
            except AgentError as exc:
                return Outcome(True, error=errors.OperationFailed(str(exc)))

        return run


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
