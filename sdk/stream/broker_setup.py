"""A Mosquitto configuration that enforces identity: `heartsight broker config` writes it.

Each device account may publish only heartsight/v1/<its site>/<its id>/alerts and .../status and read only
.../acks; clinician accounts read every device's alerts and status (also as a shared subscription) and write acks,
never alerts or status. No account can take another's client id, and queued alerts survive a broker killed with
kill -9. Every rule is one of Mosquitto's own mechanisms, chosen by trying the attacks against Mosquitto 2.0.11
(tests/test_broker_setup.py keeps trying them):

- the dynamic security plugin holds the accounts (hashed passwords) and their topic access. Unlike an acl_file it
  checks SUBSCRIBE, and it checks a shared subscription by its whole filter `$share/<group>/<topic>`, so a device
  cannot join the listeners' group. (With an acl_file, Mosquitto 2.0.11 grants every subscription and filters only
  what it delivers: a device that joined the group took its round-robin share of the alerts and they were dropped,
  10 of 30 with two listeners, while the device that sent them got PUBACK success.)
- use_username_as_clientid: the broker replaces every client id with the account name, so a client cannot take
  over another account's session (its queued alerts) or disconnect another account's client by using its id.
  (The plugin's per-client `clientid` also stops both, by refusing the connection, but then every client must
  connect with exactly that id, which the Publisher's and Listener's default ids are not.)
- persistence with autosave_on_changes and autosave_interval 1 writes the in-memory state after every change
  (subscription, queued message), so an alert queued for an offline listener survives kill -9. Mosquitto writes
  at the end of the event-loop pass that acknowledged the alert, so a kill within that pass (under a millisecond
  with a small queue) still loses it; and each write is the whole state, so with a long queue every alert costs a
  write of the queue (about 250 alerts/s with 1,000 3 kB alerts queued, 86/s with 3,000). --autosave-changes N
  trades up to N-1 acknowledged alerts on kill -9 for that cost.
- max_queued_messages 1,000,000, so that Mosquitto does not drop a listener's alerts after 1,000 (its default).
"""

from __future__ import annotations

import base64
import getpass
import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sdk.device.names import check_name
from sdk.errors import HeartSightError
from sdk.stream.topics import acks_topic, alerts_topic, head_topic, status_topic

# Mosquitto's dynamic security plugin: the Debian/Ubuntu paths first, then where `make install` and Homebrew put it.
PLUGIN_NAME = "mosquitto_dynamic_security.so"
PLUGIN_PLACES = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib/*-linux-gnu*", "/usr/lib",
                 "/usr/local/lib", "/usr/lib64", "/opt/homebrew/lib", "/usr/local/opt/mosquitto/lib"]
# Queue this many QoS 1 alerts per offline listener before Mosquitto drops any (its default is 1,000).
MAX_QUEUED_MESSAGES = 1_000_000
# Unacknowledged deliveries per client. The listener acknowledges an alert after storing it and stores by alert id,
# so order does not matter; 100 lets a listener 50 ms away take up to 2,000 alerts/s and bounds the resend after it
# reconnects. (Mosquitto's default is 20; 1 would give strict order at one round trip per alert.)
MAX_INFLIGHT_MESSAGES = 100
# The dynamic security plugin's password hash (what `mosquitto_ctrl dynsec` writes): PBKDF2-HMAC-SHA512, a 12-byte
# salt, 101 iterations. The passwords are 192-bit random tokens, so more iterations would only slow every connect.
HASH_ITERATIONS = 101

CREDENTIALS = "credentials.json"
DYNSEC = "dynamic-security.json"
CONF = "mosquitto.conf"
TLS_FILES = ("ca.crt", "ca.key", "server.crt", "server.key")


@dataclass(frozen=True)
class Account:
    """One broker account: a device (site and id set) or a clinician."""

    username: str
    password: str = field(repr=False)
    site: str | None = None
    device: str | None = None

    @property
    def is_device(self) -> bool:
        return self.device is not None


@dataclass
class BrokerSetup:
    """What write_broker_config wrote: the files and whether passwords and certificates were new or kept."""

    directory: Path
    conf: Path
    credentials: Path
    dynsec: Path
    port: int
    tls: bool
    ca: Path | None
    accounts: list[Account]
    kept_passwords: list[str] = field(default_factory=list)
    kept_tls: bool = False

    @property
    def url(self) -> str:
        return f"mqtts://localhost:{self.port}" if self.tls else f"mqtt://127.0.0.1:{self.port}"


def device_username(site: str, device: str) -> str:
    """A device account is named SITE/ID: '/' cannot occur in a name, so no two devices (and no clinician, whose
    name has no '/') can share an account name, as they could with a joined form like SITE.ID."""
    return f"{site}/{device}"


def parse_device(spec: str) -> tuple[str, str]:
    """(site, id) from a --device SITE/ID spec, both valid names."""
    parts = spec.split("/")
    if len(parts) != 2:
        raise HeartSightError(f"--device {spec!r} is not SITE/ID: give exactly one '/' between the site and the "
                              "device id, e.g. --device ward-3/dev-0042")
    check_name(f"--device {spec!r}: site", parts[0])
    check_name(f"--device {spec!r}: device id", parts[1])
    return parts[0], parts[1]


def plan_accounts(devices: list[str], clinicians: list[str], old_passwords: dict[str, str] | None = None
                  ) -> list[Account]:
    """The accounts to create, refusing bad or repeated names; an account already in old_passwords keeps its
    password, so adding a device to the fleet does not invalidate the passwords deployed on the others."""
    old_passwords = old_passwords or {}
    if not devices and not clinicians:
        raise HeartSightError("no accounts to create: give at least one --device SITE/ID or --clinician NAME")
    accounts: dict[str, Account] = {}

    def add(username: str, what: str, **where) -> None:
        if username in accounts:
            raise HeartSightError(f"{what} is given twice: list each account once")
        password = old_passwords.get(username) or secrets.token_hex(24)  # hex: never starts with '-', which a
        # command line (--password -x…) would take for an option
        accounts[username] = Account(username, password, **where)

    for spec in devices:
        site, device = parse_device(spec)
        add(device_username(site, device), f"--device {spec}", site=site, device=device)
    for name in clinicians:
        check_name("--clinician", name)
        add(name, f"--clinician {name}")
    return list(accounts.values())


def hash_password(password: str) -> dict:
    """The password, salt and iterations fields of a dynamic-security.json client, as the plugin checks them."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, HASH_ITERATIONS, 64)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": HASH_ITERATIONS}


def _acl(kind: str, topic: str) -> dict:
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def device_role(site: str, device: str) -> dict:
    """Exactly the device's own topics: publish its alerts and its (retained, last-will) status, read its acks and
    its head updates."""
    return {"rolename": f"device:{device_username(site, device)}", "acls": [
        _acl("publishClientSend", alerts_topic(site, device)),
        _acl("publishClientSend", status_topic(site, device)),
        _acl("subscribeLiteral", acks_topic(site, device)),
        _acl("publishClientReceive", acks_topic(site, device)),
        _acl("subscribeLiteral", head_topic(site, device)),
        _acl("publishClientReceive", head_topic(site, device)),
    ]}


def clinician_role() -> dict:
    """Read every device's alerts and status, directly or in a shared group, write acks and head updates; nothing else.

    The plugin matches a shared subscription by its whole filter, so the $share/+/... patterns are what let
    listeners share the alerts; the device roles have none, which is what keeps devices out of the group."""
    alerts, status, acks = alerts_topic("+", "+"), status_topic("+", "+"), acks_topic("+", "+")
    return {"rolename": "clinician", "acls": [
        _acl("subscribePattern", alerts), _acl("subscribePattern", status),
        _acl("subscribePattern", f"$share/+/{alerts}"), _acl("subscribePattern", f"$share/+/{status}"),
        _acl("publishClientReceive", alerts), _acl("publishClientReceive", status),
        _acl("publishClientSend", acks), _acl("publishClientSend", head_topic("+", "+")),
    ]}


def dynsec_document(accounts: list[Account]) -> dict:
    """The dynamic security plugin's configuration: one role per device, one clinician role, everything else
    denied (defaultACLAccess), and no admin client, so nobody can change the accounts through $CONTROL while the
    broker runs; re-run `heartsight broker config` instead."""
    clients, roles = [], [clinician_role()]
    for account in accounts:
        if account.is_device:
            role = device_role(account.site, account.device)
            roles.append(role)
            rolename, text = role["rolename"], f"device {account.device} of site {account.site}"
        else:
            rolename, text = "clinician", f"clinician {account.username}"
        clients.append({"username": account.username, "textName": text, **hash_password(account.password),
                        "roles": [{"rolename": rolename, "priority": 0}]})
    return {"defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                                 "unsubscribe": True},
            "clients": clients, "groups": [], "roles": roles}


def mosquitto_conf(directory: Path, port: int, plugin: str, tls: bool, autosave_changes: int = 1) -> str:
    """mosquitto.conf text, with absolute paths so `mosquitto -c` works from any directory."""
    d = directory
    lines = [
        "# Written by `heartsight broker config`; start with: mosquitto -c " + str(d / CONF),
        "# Accounts and topic access: the dynamic security plugin (dynamic-security.json); passwords for the",
        "# clients: credentials.json. Re-run `heartsight broker config` to add or remove accounts, then restart.",
    ]
    try:  # run as the owner of these files: as root, Mosquitto would switch to user mosquitto, which cannot read
        lines.append(f"user {getpass.getuser()}")  # the 0600 keys and accounts
    except (KeyError, OSError):  # no name for this uid (some containers): Mosquitto's default applies
        pass
    lines += [
        "per_listener_settings false",
        # 127.0.0.1 only: the server certificate names localhost and 127.0.0.1, and without TLS passwords travel
        # in clear text.
        f"listener {port} 127.0.0.1",
    ]
    if tls:
        lines += [f"cafile {d / 'ca.crt'}", f"certfile {d / 'server.crt'}", f"keyfile {d / 'server.key'}",
                  "tls_version tlsv1.2"]
    lines += [
        "allow_anonymous false",
        "use_username_as_clientid true",
        f"plugin {plugin}",
        f"plugin_opt_config_file {d / DYNSEC}",
        "persistence true",
        f"persistence_location {d / 'data'}/",
        "persistence_file mosquitto.db",
        "autosave_on_changes true",
        f"autosave_interval {autosave_changes}",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        "log_dest stderr",
    ]
    return "\n".join(lines) + "\n"


def find_plugin(path: str | Path | None = None) -> str:
    """The dynamic security plugin's file: `path` if given, else the first found where packages install it."""
    if path is not None:
        if not Path(path).is_file():
            raise HeartSightError(f"dynamic security plugin {path} does not exist: pass the path of "
                                  f"{PLUGIN_NAME} (part of Mosquitto 2.0 and later)")
        return str(Path(path).resolve())
    for place in PLUGIN_PLACES:
        found = sorted(glob.glob(os.path.join(place, PLUGIN_NAME)))
        if found:
            return found[0]
    raise HeartSightError(f"Mosquitto's dynamic security plugin ({PLUGIN_NAME}) was not found in "
                          f"{', '.join(PLUGIN_PLACES)}: install Mosquitto 2.0 or later (apt-get install mosquitto) "
                          "or pass its path with --dynsec-plugin")


def openssl_command() -> str:
    """The openssl executable, which makes the certificates (the `cryptography` package is not a dependency)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise HeartSightError("the openssl command is needed to make the broker's TLS certificates: install it "
                              "(apt-get install openssl) or pass --no-tls for a broker reachable from this machine "
                              "only")
    return openssl


def make_tls_files(directory: Path) -> None:
    """A self-signed CA (ca.crt, ca.key) and a server certificate it signs for localhost and 127.0.0.1
    (server.crt, server.key), EC P-256. Clients pass ca.crt as their CA; ca.key stays here, 0600, to sign a new
    server certificate."""
    openssl = openssl_command()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    d = directory
    extensions = d / "server.ext"
    extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                          "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    try:
        for command in (
            ["req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.crt", "-days", "3650",
             "-subj", "/CN=HeartSight broker CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ["req", *ec, "-keyout", d / "server.key", "-out", d / "server.csr", "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
             "-set_serial", "0x" + secrets.token_hex(16), "-days", "825", "-out", d / "server.crt",
             "-extfile", extensions],
        ):
            done = subprocess.run([openssl, *map(str, command)], capture_output=True, text=True)
            if done.returncode != 0:
                why = (done.stderr.strip().splitlines() or ["no message"])[-1]
                raise HeartSightError(f"openssl {command[0]} failed making the broker's certificates ({why}): "
                                      "check that `openssl version` works, or pass --no-tls")
    finally:
        for scratch in (extensions, d / "server.csr"):
            scratch.unlink(missing_ok=True)
    for key in ("ca.key", "server.key"):
        os.chmod(d / key, 0o600)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never visible with wider permissions (temp file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)
    os.replace(tmp, path)


def _read_old_passwords(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HeartSightError(f"{path} cannot be read as JSON ({exc}): delete it to generate new passwords for "
                              "every account") from None
    if not isinstance(old, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in old.items()):
        raise HeartSightError(f"{path} is not a JSON object of account -> password: delete it to generate new "
                              "passwords for every account")
    return old


def _check_directory(out: Path) -> Path:
    """The absolute --out directory, created and writable; Mosquitto's configuration cannot hold paths with spaces."""
    out = Path(out).expanduser().absolute()
    if re.search(r"\s", str(out)):
        raise HeartSightError(f"--out {out} contains whitespace, which mosquitto.conf cannot hold in a path: "
                              "choose a directory without spaces")
    try:
        (out / "data").mkdir(parents=True, exist_ok=True)
        os.chmod(out / "data", 0o700)  # Mosquitto's persistence file holds queued alerts: patient data
        probe = out / ".heartsight-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise HeartSightError(f"cannot write the broker configuration to {out}: {exc.strerror or exc}: choose a "
                              "directory you can write with --out") from None
    return out


def write_broker_config(out: str | Path, devices: list[str], clinicians: list[str], port: int | None = None,
                        tls: bool = True, autosave_changes: int = 1, plugin: str | Path | None = None
                        ) -> BrokerSetup:
    """Write mosquitto.conf, dynamic-security.json (hashed passwords, roles), credentials.json (0600, account ->
    password) and, with TLS, ca.crt/ca.key/server.crt/server.key into `out`.

    Run again on the same directory, it keeps the passwords of the accounts listed again and the certificates, so
    clients already deployed keep working; accounts not listed are removed (a running broker reads the new
    accounts when restarted). The arguments, then the tools needed, are checked before anything is written.
    """
    if port is None:
        port = 8883 if tls else 1883
    if not 1 <= port <= 65535:
        raise HeartSightError(f"--port {port} is not a TCP port: use 1-65535")
    if autosave_changes < 1:
        raise HeartSightError(f"--autosave-changes {autosave_changes} must be at least 1 (1 saves every change)")
    directory = Path(out).expanduser().absolute()
    old = _read_old_passwords(directory / CREDENTIALS)
    accounts = plan_accounts(devices, clinicians, old)
    plugin_path = find_plugin(plugin)
    kept_tls = tls and all((directory / name).is_file() for name in TLS_FILES)
    if tls and not kept_tls:
        openssl_command()
    directory = _check_directory(directory)
    if tls and not kept_tls:
        make_tls_files(directory)
    _write_private(directory / DYNSEC, json.dumps(dynsec_document(accounts), indent=2) + "\n")
    _write_private(directory / CREDENTIALS, json.dumps({a.username: a.password for a in accounts}, indent=2) + "\n")
    (directory / CONF).write_text(mosquitto_conf(directory, port, plugin_path, tls, autosave_changes))
    return BrokerSetup(directory, directory / CONF, directory / CREDENTIALS, directory / DYNSEC, port, tls,
                       directory / "ca.crt" if tls else None, accounts,
                       kept_passwords=[a.username for a in accounts if old.get(a.username) == a.password],
                       kept_tls=kept_tls)
