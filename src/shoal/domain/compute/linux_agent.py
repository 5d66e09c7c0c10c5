"""What Azure's Linux provisioning agent does inside a VM, as Shoal does it: the admin user and SSH.

On Azure, a Linux VM created from a generalized image is provisioned on its first boot by the guest agent
(``waagent``, or cloud-init on newer images) from ``osProfile``: it creates ``adminUsername`` with a home
directory, writes ``linuxConfiguration.ssh.publicKeys`` to ``~/.ssh/authorized_keys``, sets ``adminPassword``
(if any), gives the user sudo without a password, turns SSH password logins off when
``disablePasswordAuthentication`` says so, and gives the VM SSH host keys of its own. ``sshd`` then answers on
port 22. ``waagent -deprovision+user`` (what one runs before ``az vm generalize``) removes the host keys, that
user (home and keys included) and the agent's state, so that VMs made from the image are provisioned afresh.

Shoal does the same with the image's own tools (``useradd``, ``ssh-keygen``, OpenSSH's ``sshd``): this module
checks ``osProfile`` against Azure's rules when the VM is created (:func:`plan`) and writes the shell scripts
the compute reconciler runs inside the VM as its root (:func:`first_boot_script`, :func:`boot_script`,
:func:`deprovision_script`). Only a SHA-512 crypt hash of the password is kept (as ``/etc/shadow`` keeps it),
and only until the first boot has set it.

Where Shoal is more lenient than Azure: an ``osProfile`` with an ``adminUsername`` but neither a password nor
SSH keys is accepted (Azure asks for ``adminPassword``); the user is created without any way to log in.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import shlex
from typing import Any

from shoal.core import errors

# Azure's "Disallowed values" for adminUsername, and the system accounts of Linux images ("Selecting user names
# for Linux on Azure": provisioning fails with one of them).
DISALLOWED_USERNAMES = frozenset({
    "administrator", "admin", "user", "user1", "test", "user2", "test1", "user3", "admin1", "1", "123", "a",
    "actuser", "adm", "admin2", "aspnet", "backup", "console", "david", "guest", "john", "owner", "root", "server",
    "sql", "support", "support_388945a0", "sys", "test2", "test3", "user4", "user5",
    "bin", "daemon", "games", "gnats", "irc", "list", "lp", "mail", "man", "messagebus", "news", "nobody",
    "proxy", "sshd", "sync", "uucp", "www-data", "_apt", "systemd-network", "systemd-resolve", "systemd-timesync",
    "polkitd", "syslog", "ntp", "dnsmasq",
})
_USERNAME = re.compile(r"[a-z_][a-z0-9_.-]{0,63}", re.IGNORECASE)
DISALLOWED_PASSWORDS = frozenset({"abc@123", "P@$$w0rd", "P@ssw0rd", "P@ssword123", "Pa$$word", "pass@word1",
                                  "Password!", "Password1", "Password22", "iloveyou!"})
KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
SUDOERS_FILE = "/etc/sudoers.d/90-cloud-init-users"  # where cloud-init, Azure's provisioning agent, puts it
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/50-cloud-init.conf"
STATE_DIR = "/var/lib/waagent"
SSHD_LOG = "/var/log/auth.log"


def _invalid(message: str, target: str) -> errors.AzureError:
    return errors.InvalidParameter(message, target=target)


def plan(os_profile: dict[str, Any] | None) -> dict[str, Any] | None:
    """Check a VM's ``osProfile`` as Azure does; what provisioning needs (None: nothing to provision).

    Returns ``{"adminUsername", "publicKeys": [key lines], "passwordHash": crypt hash or None,
    "disablePasswordAuthentication": bool}``."""
    if not os_profile or not os_profile.get("adminUsername"):
        if os_profile and (os_profile.get("adminPassword") or os_profile.get("linuxConfiguration")):
            raise _invalid("Required parameter 'osProfile.adminUsername' is missing (null).", "adminUsername")
        return None
    user = str(os_profile["adminUsername"])
    if not _USERNAME.fullmatch(user) or user.endswith(".") or user.lower() in DISALLOWED_USERNAMES:
        raise _invalid("The Admin Username specified is not allowed.", "adminUsername")
    linux = os_profile.get("linuxConfiguration") or {}
    password = os_profile.get("adminPassword")
    keys: list[str] = []
    for key in (linux.get("ssh") or {}).get("publicKeys") or []:
        path = key.get("path") or f"/home/{user}/.ssh/authorized_keys"
        if path != f"/home/{user}/.ssh/authorized_keys":
            raise _invalid(
                "Destination path for SSH public keys is currently limited to its default value "
                f"/home/{user}/.ssh/authorized_keys due to a known issue in Linux provisioning agent.",
                "linuxConfiguration.ssh.publicKeys.path")
        keys.append(public_key_line(key.get("keyData")))
    disabled = bool(linux.get("disablePasswordAuthentication"))
    if disabled and not keys:
        raise _invalid("Authentication using either SSH or by user name and password must be enabled in Linux "
                       "profile.", "linuxConfiguration")
    if password is not None:
        if disabled:
            raise _invalid("Admin password cannot be specified when password authentication is disabled "
                           "(linuxConfiguration.disablePasswordAuthentication).", "adminPassword")
        check_password(str(password))
    return {"adminUsername": user, "publicKeys": keys, "disablePasswordAuthentication": disabled,
            "passwordHash": sha512_crypt(str(password)) if password is not None else None}


def public_key_line(data: Any) -> str:
    """One ``authorized_keys`` line from ``keyData`` (OpenSSH format: type, base64 blob, optional comment)."""
    bad = _invalid("The value of parameter linuxConfiguration.ssh.publicKeys.keyData is invalid.",
                   "linuxConfiguration.ssh.publicKeys.keyData")
    if not isinstance(data, str):
        raise bad
    words = data.strip().split(None, 2)
    if len(words) < 2 or words[0] not in KEY_TYPES or "\n" in data.strip() or "\r" in data:
        raise bad
    try:
        blob = base64.b64decode(words[1], validate=True)
    except ValueError as exc:
        raise bad from exc
    # The blob starts with its own type name (a length-prefixed string), which must match the first word.
    size = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if size != len(words[0]) or blob[4:4 + size] != words[0].encode() or len(blob) < 4 + size + 16:
        raise bad
    return " ".join(words)


def check_password(password: str) -> None:
    kinds = sum(bool(re.search(p, password)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[\W_]"))
    if not 6 <= len(password) <= 72 or kinds < 3 or any(ord(c) < 32 or ord(c) == 127 for c in password) \
            or password in DISALLOWED_PASSWORDS:
        raise _invalid(
            "The supplied password must be between 6-72 characters long and must satisfy at least 3 of password "
            "complexity requirements from the following: 1) Contains an uppercase character 2) Contains a "
            "lowercase character 3) Contains a numeric digit 4) Contains a special character 5) Control characters "
            "are not allowed", "adminPassword")


# --- SHA-512 crypt ("$6$", the format of /etc/shadow; Ulrich Drepper's specification) -------------------------
_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ORDER = ((0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48), (28, 49, 7),
          (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13), (56, 14, 35),
          (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41))


def sha512_crypt(password: str, salt: str | None = None, rounds: int = 5000) -> str:
    """``crypt(3)`` with SHA-512 (what ``openssl passwd -6`` and ``chpasswd`` write), for ``usermod -p``."""
    pw = password.encode()
    salt = salt if salt is not None else "".join(secrets.choice(_ITOA64) for _ in range(16))
    sb = salt.encode()[:16]
    alt = hashlib.sha512(pw + sb + pw).digest()
    a = hashlib.sha512(pw + sb)
    n = len(pw)
    while n > 64:
        a.update(alt)
        n -= 64
    a.update(alt[:n])
    n = len(pw)
    while n:
        a.update(alt if n & 1 else pw)
        n >>= 1
    c = a.digest()
    dp = hashlib.sha512(pw * len(pw)).digest()
    p = (dp * (len(pw) // 64 + 1))[:len(pw)]
    ds = hashlib.sha512(sb * (16 + c[0])).digest()
    s = (ds * (len(sb) // 64 + 1))[:len(sb)]
    for i in range(rounds):
        h = hashlib.sha512(p if i & 1 else c)
        if i % 3:
            h.update(s)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()
    out: list[str] = []
    for b2, b1, b0 in _ORDER:
        w = (c[b2] << 16) | (c[b1] << 8) | c[b0]
        out.extend(_ITOA64[(w >> (6 * k)) & 0x3F] for k in range(4))
    out.extend(_ITOA64[(c[63] >> (6 * k)) & 0x3F] for k in range(2))
    prefix = "$6$" if rounds == 5000 else f"$6$rounds={rounds}$"
    return f"{prefix}{sb.decode()}${''.join(out)}"


# --- scripts run inside the VM as its root ---------------------------------------------------------------------
def first_boot_script(provisioning: dict[str, Any] | None) -> str:
    """The VM's first boot: host keys of its own, the admin user (idempotent: a crash may run it twice)."""
    lines = ["set -e", "umask 022",
             # Host keys of this VM (cloud-init regenerates them for a new instance): images, and the host's
             # own root as a base, come with keys other machines have too.
             "if command -v ssh-keygen >/dev/null 2>&1 && [ -d /etc/ssh ]; then",
             "  rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub",
             "  ssh-keygen -A >/dev/null",
             "fi",
             f"mkdir -p {STATE_DIR}"]
    if provisioning:
        user = shlex.quote(provisioning["adminUsername"])
        keys = provisioning.get("publicKeys") or []
        password = provisioning.get("passwordHash") or "*"  # "*": no password login, yet not locked for sshd
        disabled = provisioning.get("disablePasswordAuthentication") or not provisioning.get("passwordHash")
        lines += [
            f"user={user}",
            'shell=/bin/sh; [ -x /bin/bash ] && shell=/bin/bash',
            'id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell "$shell" "$user"',
            f'usermod --password {shlex.quote(password)} "$user"',
            'home=$(getent passwd "$user" | cut -d: -f6)',
            'group=$(id -gn "$user")',
            'install -d -m 700 -o "$user" -g "$group" "$home/.ssh"',
        ]
        if keys:
            lines += [f"printf '%s\\n' {' '.join(shlex.quote(k) for k in keys)} > \"$home/.ssh/authorized_keys\"",
                      'chown "$user:$group" "$home/.ssh/authorized_keys"',
                      'chmod 600 "$home/.ssh/authorized_keys"']
        lines += [
            "mkdir -p /etc/sudoers.d",
            f"printf '%s ALL=(ALL) NOPASSWD:ALL\\n' \"$user\" > {SUDOERS_FILE}",
            f"chmod 440 {SUDOERS_FILE}",
            "if [ -d /etc/ssh ]; then",
            "  mkdir -p /etc/ssh/sshd_config.d",
            f"  printf 'PasswordAuthentication {'no' if disabled else 'yes'}\\n' > {SSHD_DROP_IN}",
            "fi",
            f'printf "%s\\n" "$user" > {STATE_DIR}/provisioned',
        ]
    else:
        lines.append(f": > {STATE_DIR}/provisioned")
    return "\n".join(lines) + "\n"


def boot_script(port: int | None = None) -> str:
    """Every boot: start the image's OpenSSH server (as its init system would), if it has one and it is not
    running yet. It listens on port 22 of the VM's own network namespace, or on ``port`` of the host's when the
    VM shares the host's network (``domain/host_ssh.py``)."""
    return "\n".join([
        "[ -x /usr/sbin/sshd ] || exit 0",
        "if [ -f /run/sshd.pid ] && kill -0 \"$(cat /run/sshd.pid)\" 2>/dev/null; then exit 0; fi",
        "ssh-keygen -A >/dev/null 2>&1 || true",  # host keys a deprovisioned disk lacks
        "mkdir -p /run/sshd && chmod 755 /run/sshd",  # privilege separation directory (/run is fresh each boot)
        f"mkdir -p /var/log && exec /usr/sbin/sshd -E {SSHD_LOG}{sshd_port_option(port)}",
    ]) + "\n"


def sshd_port_option(port: int | None) -> str:
    """``sshd``'s options for a port of its own (``-p`` replaces the configuration's ``Port``); "" for 22."""
    return f" -p {int(port)}" if port is not None else ""


def deprovision_script(admin_username: str | None) -> str:
    """``waagent -deprovision+user``: host keys, the provisioned user (home and keys), its sudo rule, the
    agent's state and root's shell history go; VMs from the captured disk are provisioned afresh."""
    lines = ["rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub",
             f"rm -f {SUDOERS_FILE} {SSHD_DROP_IN} /root/.bash_history",
             f"rm -rf {STATE_DIR}"]
    if admin_username:
        user = shlex.quote(admin_username)
        lines = [f'if id -u {user} >/dev/null 2>&1; then home=$(getent passwd {user} | cut -d: -f6); '
                 f'userdel --force --remove {user} 2>/dev/null || userdel --force {user}; '
                 'case "$home" in /home/?*) rm -rf "$home";; esac; fi', *lines]
    return "\n".join(lines) + "\nexit 0\n"
