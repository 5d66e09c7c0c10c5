"""Compute node user accounts (``POST/PUT/DELETE .../nodes/{node}/users``) and remote login.

The Batch API's rules (Compute Node - Add User / Update User / Delete User, ``ComputeNodeUser``):

- a user can be added only while the node is ``idle`` or ``running`` (409 otherwise: ``NodeBeingCreated``,
  ``NodeBeingStarted``, ``NodeBeingRebooted``, ``NodeBeingReimaged``, ``NodeStateUnusable``,
  ``OperationInvalidForCurrentState``); a name the node already has is 409 ``NodeUserExists``; updating or
  deleting a user the node does not have is 404 ``NodeUserNotFound``;
- ``name`` is required; ``isAdmin`` defaults to false; ``expiryTime`` defaults to one day from now;
  ``password`` and ``sshPublicKey`` are both optional on Linux nodes;
- an update replaces every updatable property (``password``, ``sshPublicKey``, ``expiryTime``): one left out
  goes back to its default (no password, no key, a day from now); ``isAdmin`` cannot change.

Inside the node the user is made as Azure's node agent makes it on a Linux node, with the image's own tools:
``useradd`` (home, the image's login shell), the password's SHA-512 crypt hash (only the hash leaves the
request), ``~/.ssh/authorized_keys`` with the key, and for an admin a sudoers rule without a password. The
node's OpenSSH server (the image's ``sshd``) is started the first time a user is added, with SSH host keys of
the node's own (made then, like a VM's at its first boot), listening on port 22 of the node's own address
(with ``--node-network host``, on a port of the host's that is the node's own: ``domain/host_ssh.py``);
nodes without users run no ``sshd`` (a node without a user cannot be logged in to anyway, and a thousand idle
``sshd`` processes would cost a thousand nodes' memory). A node that reboots starts it again at boot.

Expiry: the service's clock decides (so ``shoal faults set --clock-offset`` moves it): the node users loop
removes an expired user from its node (its processes end, its home goes). Azure keeps Linux expiry at a day's
precision; Shoal removes the user at the time given.

Remote login goes through the pool's inbound NAT endpoint for SSH: the NAT pool whose backend port is 22 when
the pool has NAT pools, otherwise Azure's default SSH endpoint (``natpools.default_ssh``). A node without such an
endpoint (public addresses not provisioned, nodes made before endpoints existed) answers with its own address
and port 22, which the Shoal host (the pool's virtual network) reaches. With ``--node-network host`` it answers
with the host's address and the node's own SSH port there (chosen then if the node has none yet).
"""

from __future__ import annotations

import base64
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shoal.core import errors, timefmt
from shoal.core.clock import Clock
from shoal.domain import host_ssh
from shoal.domain.batch import pools
from shoal.domain.compute import linux_agent
from shoal.domain.host import HostAgent
from shoal.store import models

DEFAULT_LIFETIME = timedelta(days=1)
SSH_PORT = 22
SUDOERS_DIR = "/etc/sudoers.d"
SSH_STATE = "/var/lib/batch-ssh"  # the node's own host keys were made (once per node)
USER_EXISTS_EXIT = 17  # the script's exit code when the node already has an account of that name
_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}", re.IGNORECASE)
_RESERVED = frozenset({"root", "_azbatch", "sshd", "nobody"})
_STATES = {"creating": errors.NodeBeingCreated, "starting": errors.NodeBeingStarted,
           "waitingforstarttask": errors.NodeBeingStarted, "rebooting": errors.NodeBeingRebooted,
           "reimaging": errors.NodeBeingReimaged, "unusable": errors.NodeStateUnusable}
GUEST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
             "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Account:
    """What a node user is to be: checked, with only a hash of the password."""

    name: str
    is_admin: bool
    expiry: datetime
    password_hash: str | None
    key_line: str | None


# --- the request bodies ---------------------------------------------------------------------------------------
def _key_line(value: Any) -> str:
    """An ``authorized_keys`` line from ``sshPublicKey``: the OpenSSH line (type, base64, comment) or the base64
    blob alone (its type is read from the blob)."""
    if not isinstance(value, str) or not value.strip():
        raise pools.bad_value("sshPublicKey", value, "an OpenSSH public key is required")
    text = value.strip()
    if len(text.split()) == 1:
        try:
            blob = base64.b64decode(text, validate=True)
            size = int.from_bytes(blob[:4], "big")
            text = f"{blob[4:4 + size].decode()} {text}"
        except (ValueError, UnicodeDecodeError):
            raise pools.bad_value("sshPublicKey", value, "an OpenSSH public key is required") from None
    try:
        return linux_agent.public_key_line(text)
    except errors.AzureError:
        raise pools.bad_value("sshPublicKey", value, "an OpenSSH public key (ssh-ed25519, ssh-rsa, ecdsa-sha2-*) "
                              "is required") from None


def _expiry(value: Any, clock: Clock) -> datetime:
    now = clock.now()
    if value is None:
        return now + DEFAULT_LIFETIME
    try:
        when = timefmt.parse_timestamp(str(value))
    except ValueError:
        raise pools.bad_value("expiryTime", value, "an ISO 8601 date and time is required") from None
    if when <= now:
        raise pools.bad_value("expiryTime", value, "the expiry time must be in the future")
    return when


def _password(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or any(ord(c) < 32 or ord(c) == 127 for c in value) or len(value) > 256:
        raise pools.bad_value("password", "******", "a password of printable characters is required")
    return linux_agent.sha512_crypt(value)


def account(body: dict[str, Any], clock: Clock, *, name: str | None = None,
            is_admin: bool | None = None) -> Account:
    """A user from an add body, or (``name`` and ``is_admin`` given: the user's) from an update body."""
    if name is None:
        name = body.get("name")
        if name is None or name == "":
            raise pools.missing("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name.lower() in _RESERVED:
            raise pools.bad_value("name", name, "a Linux user name is required: letters, digits, underscores and "
                                  "hyphens, starting with a letter or an underscore, at most 32 characters")
        admin = body.get("isAdmin", False)
        if admin is None:
            admin = False
        if not isinstance(admin, bool):
            raise pools.bad_value("isAdmin", admin, "true or false is required")
        is_admin = admin
    key = body.get("sshPublicKey")
    return Account(name, bool(is_admin), _expiry(body.get("expiryTime"), clock), _password(body.get("password")),
                   _key_line(key) if key not in (None, "") else None)


# --- the records ----------------------------------------------------------------------------------------------
def check_node(node: models.Node) -> None:
    """A user can be added to (or changed on) a node only while it is idle or running."""
    if node.state in ("idle", "running") and node.pending not in ("remove", "reboot", "reimage"):
        return
    pending = {"reboot": "rebooting", "reimage": "reimaging"}.get(node.pending)
    kind = _STATES.get(pending or node.state, errors.OperationInvalidForCurrentState)
    raise kind(f"The specified node is in the {node.state} state; a user can be added to it only while it is "
               "idle or running.", values={"NodeState": node.state})


def _key(node: models.Node, name: str) -> str:
    return f"{node.key}/{name.lower()}"


def add(s: Session, node: models.Node, user: Account) -> None:
    """Record a new user of the node (409 ``NodeUserExists`` if it has one of that name)."""
    check_node(node)
    if s.get(models.NodeUser, _key(node, user.name)) is not None:
        raise exists()
    s.add(models.NodeUser(key=_key(node, user.name), node_key=node.key, name=user.name, is_admin=user.is_admin,
                          expiry_time=user.expiry))
    try:
        s.flush()
    except IntegrityError:
        raise exists() from None


def exists() -> errors.AzureError:
    return errors.NodeUserExists("The specified node user already exists.")


def get(s: Session, node: models.Node, name: str) -> models.NodeUser:
    row = s.get(models.NodeUser, _key(node, name))
    if row is None:
        raise errors.NodeUserNotFound("The specified node user does not exist.", values={"UserName": name})
    return row


def forget(s: Session, keys: list[str]) -> None:
    if keys:
        s.execute(delete(models.NodeUser).where(models.NodeUser.key.in_(keys)))


def forget_node(s: Session, node_key: str) -> None:
    """A reimaged node's disk is new: the users it had are gone with it."""
    s.execute(delete(models.NodeUser).where(models.NodeUser.node_key == node_key))


def has_users(s: Session, node_key: str) -> bool:
    return s.scalar(select(models.NodeUser.key).where(models.NodeUser.node_key == node_key).limit(1)) is not None


def expired(s: Session, now: datetime, limit: int = 100) -> list[tuple[str, str, str | None]]:
    """Users whose time is up: (user key, name, the machine id of their node, None when the node is gone)."""
    rows = s.execute(select(models.NodeUser.key, models.NodeUser.name, models.Node.machine_id)
                     .join(models.Node, models.Node.key == models.NodeUser.node_key, isouter=True)
                     .where(models.NodeUser.expiry_time <= now).order_by(models.NodeUser.expiry_time)
                     .limit(limit)).all()
    return [(k, n, m) for k, n, m in rows]


def nodes_with_users(s: Session) -> list[tuple[str, str, datetime | None, int | None]]:
    """(node key, machine id, last boot time, SSH port on the host or None) of the up nodes (idle or running)
    that have users: their sshd must run."""
    rows = s.execute(select(models.Node.key, models.Node.machine_id, models.Node.last_boot_time,
                            models.Node.endpoints)
                     .where(models.Node.key.in_(select(models.NodeUser.node_key).distinct()),
                            models.Node.state.in_(("idle", "running")))).all()
    return [(k, m, b, host_ssh.endpoint_port(e)) for k, m, b, e in rows]


def sshd_port(s: Session, node: models.Node, host: HostAgent | None, host_address: str | None) -> int | None:
    """The port the node's sshd listens on: None (22, of the node's own network) unless machines share the
    host's network (``host_address``: the host's), where the node has a port of the host's of its own, chosen
    and recorded on first use."""
    if host_address is None or host is None or not can_run(host):
        return None
    return host_ssh.node_port(s, node, host_address, host.listening_ports)


# --- remote login -----------------------------------------------------------------------------------------------
def remote_login(s: Session, node: models.Node, host: HostAgent | None,
                 host_address: str | None) -> dict[str, Any]:
    """Where ``ssh user@address -p port`` reaches the node: with ``--node-network host`` the host's address and
    the node's own port there; else its inbound NAT endpoint for port 22 (a NAT pool's, or Azure's default SSH
    endpoint), else its own address."""
    port = sshd_port(s, node, host, host_address)
    if port is not None:
        return {"remoteLoginIPAddress": host_address, "remoteLoginPort": port}
    for endpoint in node.endpoints or []:
        if endpoint.get("backendPort") == SSH_PORT and str(endpoint.get("protocol", "tcp")).lower() == "tcp":
            return {"remoteLoginIPAddress": endpoint["publicIPAddress"], "remoteLoginPort": endpoint["frontendPort"]}
    return {"remoteLoginIPAddress": node.ip_address, "remoteLoginPort": SSH_PORT}


# --- inside the node --------------------------------------------------------------------------------------------
def sshd_script(port: int | None = None) -> str:
    """The node's OpenSSH server: host keys of the node's own the first time, then ``sshd`` on port 22 of the
    node's network, or on ``port`` (see :func:`sshd_port`), with password logins allowed, as on Batch nodes,
    unless it runs already."""
    return "\n".join([
        "[ -x /usr/sbin/sshd ] || { echo 'the node image has no OpenSSH server (/usr/sbin/sshd)' >&2; exit 3; }",
        f"if [ ! -f {SSH_STATE}/host-keys ]; then",
        "  rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub",
        f"  ssh-keygen -A >/dev/null && mkdir -p {SSH_STATE} && : > {SSH_STATE}/host-keys",
        "fi",
        "if [ -f /run/sshd.pid ] && [ \"$(cat /proc/$(cat /run/sshd.pid)/comm 2>/dev/null)\" = sshd ]; then exit 0; fi",
        "mkdir -p /run/sshd && chmod 755 /run/sshd && mkdir -p /var/log",
        f"/usr/sbin/sshd -E {linux_agent.SSHD_LOG} -o PasswordAuthentication=yes -o PidFile=/run/sshd.pid"
        f"{linux_agent.sshd_port_option(port)}",
    ]) + "\n"


def user_script(user: Account, *, create: bool, port: int | None = None) -> str:
    """Make (``create``) or update the user in the node, as the node's root, then make sure sshd runs (on
    ``port``: :func:`sshd_script`)."""
    name = shlex.quote(user.name)
    sudoers = f"{SUDOERS_DIR}/batch-{user.name}"
    lines = ["set -e", "umask 022", f"user={name}",
             'shell=/bin/sh; [ -x /bin/bash ] && shell=/bin/bash']
    if create:
        lines.append('if id -u "$user" >/dev/null 2>&1; then echo "user $user exists" >&2; '
                     f'exit {USER_EXISTS_EXIT}; fi')
        lines.append('useradd --create-home --shell "$shell" "$user"')
    lines += [
        f'usermod --password {shlex.quote(user.password_hash or "*")} "$user"',
        'home=$(getent passwd "$user" | cut -d: -f6)',
        'group=$(id -gn "$user")',
        'install -d -m 700 -o "$user" -g "$group" "$home/.ssh"',
    ]
    if user.key_line:
        lines += [f'printf "%s\\n" {shlex.quote(user.key_line)} > "$home/.ssh/authorized_keys"',
                  'chown "$user:$group" "$home/.ssh/authorized_keys"', 'chmod 600 "$home/.ssh/authorized_keys"']
    else:
        lines.append('rm -f "$home/.ssh/authorized_keys"')
    if create and user.is_admin:
        lines += [f"mkdir -p {SUDOERS_DIR}",
                  f"printf '%s ALL=(ALL) NOPASSWD:ALL\\n' \"$user\" > {shlex.quote(sudoers)}",
                  f"chmod 440 {shlex.quote(sudoers)}"]
    lines.append("set +e")
    return "\n".join(lines) + "\n" + sshd_script(port)


def delete_script(name: str) -> str:
    """Remove the user from the node: its processes end, its account, home and sudo rule go."""
    user = shlex.quote(name)
    return "\n".join([
        f"id -u {user} >/dev/null 2>&1 || exit 0",
        f"pkill -KILL -u {user} 2>/dev/null; sleep 0.1",
        f"userdel --force --remove {user} 2>/dev/null || userdel --force {user}",
        f"rm -f {shlex.quote(f'{SUDOERS_DIR}/batch-{name}')}",
    ]) + "\nexit 0\n"


def can_run(host: HostAgent | None) -> bool:
    """Users exist only inside namespaced nodes (with the fallback, nodes are plain host processes)."""
    return host is not None and host.isolation == "namespaces"


def run(host: HostAgent | None, machine_id: str, script: str) -> dict[str, Any]:
    """Run a user-management script as the node's root."""
    if host is None or not can_run(host):
        raise cannot_run()
    return host.run(machine_id, ["/bin/sh", "-c", script], env=dict(GUEST_ENV), cwd="/", timeout=60)


def cannot_run() -> errors.AzureError:
    return errors.OperationNotValidOnNode(
        "Node user accounts need nodes with namespaces of their own; this server runs nodes as plain host "
        "processes (see the isolation level of the node).")


def output(result: dict[str, Any], key: str) -> str:
    value = result.get(key)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value or "")
