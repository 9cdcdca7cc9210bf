"""Validation of an inventory document (docs/inventory-format.md) into an :class:`Inventory`.

Every problem is collected first and reported together, each with the file, line and column it
comes from, so an operator fixes the whole file in one pass.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import Location, ValidationError, ValidationIssue
from engine.yamlload import Path as YPath
from engine.yamlload import Positions, load_yaml
from inventory.model import (
    PLACEHOLDER_RE,
    PLACEHOLDERS,
    Cluster,
    Datacenter,
    Disk,
    Host,
    Inventory,
    Rack,
    SSHDefaults,
    close_matches,
)

TOP_LEVEL = ("ssh", "datacenters", "racks", "clusters", "hosts")
SSH_KEYS = (
    "user", "port", "known_hosts", "key_file", "trust_on_first_use",
    "connect_timeout", "command_timeout", "sudo",
)
DATACENTER_KEYS = ("title", "contact", "notify", "extra")
NOTIFY_KEYS = ("webhook", "email", "smtp", "ticket_api")
RACK_KEYS = ("datacenter",)
CLUSTER_KEYS = (
    "admin_host", "datacenter", "ceph", "monitoring", "chat_webhook", "max_hosts_down", "commands", "extra",
)
HOST_KEYS = (
    "address", "port", "user", "jump", "cluster", "datacenter", "rack", "roles", "serial", "devices", "commands",
    "extra",
)
DISK_KEYS = ("path", "slot", "serial", "model")
T = TypeVar("T")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
COMMAND_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_inventory(text: str | bytes, file: str, base_dir: Path | None = None) -> Inventory:
    """Parse and validate an inventory document; raise :class:`ValidationError` listing every issue.

    Relative ``ssh.known_hosts``/``ssh.key_file`` paths are resolved against ``base_dir``
    (the current directory when None).
    """
    data, positions = load_yaml(text, file)
    checker = _Checker(positions)
    if data is None:
        empty = "the inventory is empty: it needs at least a 'hosts' mapping (see docs/inventory-format.md)"
        raise ValidationError([ValidationIssue(Location(file), empty)])
    if not isinstance(data, dict):
        checker.error((), f"the inventory must be a mapping with keys {_listing(TOP_LEVEL)}, "
                          f"not {_kind(data)}")
    if checker.issues:
        raise checker.failure()
    assert isinstance(data, dict)
    inventory = _Builder(checker, data, base_dir or Path.cwd(), file).build()
    if checker.issues:
        raise checker.failure()
    return inventory


def _listing(words: tuple[str, ...] | list[str]) -> str:
    return ", ".join(sorted(words))


def _kind(value: Any) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string '{shown}'"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return "a mapping"


class _Checker:
    """Collects issues and knows where each value came from."""

    def __init__(self, positions: Positions) -> None:
        self.positions = positions
        self.issues: list[ValidationIssue] = []

    def error(self, path: YPath, message: str) -> None:
        self.issues.append(ValidationIssue(self.positions.at(path), message))

    def failure(self) -> ValidationError:
        self.issues.sort(key=lambda i: (i.location.line, i.location.column) if i.location else (0, 0))
        return ValidationError(self.issues)

    def mapping(self, path: YPath, value: Any, what: str) -> dict[str, Any]:
        """``value`` as a mapping; null counts as empty; anything else is an issue and yields ``{}``."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"{what} must be a mapping, not {_kind(value)}")
            return {}
        return value

    def known_keys(self, path: YPath, entry: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> None:
        for key in entry:
            if key not in allowed:
                self.error(
                    (*path, key),
                    f"{what}: unknown key '{key}'{close_matches(key, allowed)}; "
                    f"allowed keys are {_listing(allowed)}",
                )


class _Entry:
    """Typed reads of one mapping entry (a host, a cluster, ...), reporting wrong types in place."""

    def __init__(
        self, checker: _Checker, path: YPath, data: Mapping[str, Any], what: str, valid: bool = True
    ) -> None:
        self.checker = checker
        self.path = path
        self.data = data
        self.what = what
        self.valid = valid  # an entry that is not a mapping was reported already: nothing is "missing"

    def at(self, key: str) -> YPath:
        return (*self.path, key)

    def bad(self, key: str, expected: str, fix: str = "") -> None:
        found = _kind(self.data[key])
        self.checker.error(self.at(key), f"{self.what}: {key} must be {expected}, not {found}{fix}")

    def missing(self, key: str, hint: str) -> None:
        if self.valid:
            self.checker.error(self.path, f"{self.what}: missing required key '{key}' ({hint})")

    def string(self, key: str, *, hint: str = "") -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.bad(key, "a non-empty string" + hint)
            return None
        return value

    def name(self, key: str) -> str | None:
        """A reference to another entry; a YAML number or boolean is accepted as its text."""
        value = self.data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return self.string(key)

    def integer(self, key: str, low: int, high: int | None = None) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        in_range = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if not in_range or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"of at least {low}"
            fix = ": remove the quotes" if isinstance(value, str) and value.strip().isdigit() else ""
            self.bad(key, f"an integer {span}", fix)
            return None
        assert isinstance(value, int)
        return value

    def seconds(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            self.bad(key, "a positive number of seconds")
            return None
        return float(value)

    def boolean(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.bad(key, "true or false")
            return None
        return value

    def strings(
        self, key: str, *, what: str = "strings", item_ok: Callable[[str], str | None] | None = None,
        non_empty: bool = False,
    ) -> tuple[str, ...] | None:
        """A list of strings; ``item_ok`` returns a complaint about one item, or None."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or (non_empty and not value):
            self.bad(key, f"a {'non-empty ' if non_empty else ''}list of {what}")
            return None
        ok = True
        seen: set[str] = set()
        for i, item in enumerate(value):
            where = (*self.path, key, i)
            if not isinstance(item, str) or not item:
                self.checker.error(
                    where, f"{self.what}: {key}[{i}] must be a non-empty string, not {_kind(item)}"
                )
                ok = False
                continue
            complaint = item_ok(item) if item_ok else None
            if complaint:
                self.checker.error(where, f"{self.what}: {key}[{i}] {complaint}")
                ok = False
            elif item in seen:
                self.checker.error(where, f"{self.what}: {key} lists '{item}' twice; remove one")
                ok = False
            seen.add(item)
        return tuple(value) if ok else None

    def string_map(self, key: str, allowed: tuple[str, ...] | None = None) -> dict[str, str]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(key, "a mapping of names to strings")
            return {}
        if allowed is not None:
            self.checker.known_keys(self.at(key), value, allowed, f"{self.what}: {key}")
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str) or not v.strip():
                self.checker.error(
                    (*self.path, key, k), f"{self.what}: {key}.{k} must be a non-empty string, not {_kind(v)}"
                )
            elif allowed is None or k in allowed:
                out[k] = v
        return out

    def free_map(self, key: str) -> dict[str, Any]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(key, "a mapping (free-form)")
            return {}
        self._no_binary((*self.path, key), f"{key}", value)
        return value

    def _no_binary(self, path: YPath, shown: str, value: Any) -> None:
        if isinstance(value, bytes):
            self.checker.error(path, f"{self.what}: {shown} is binary (!!binary); use a plain string")
        elif isinstance(value, dict):
            for k, v in value.items():
                self._no_binary((*path, k), f"{shown}.{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self._no_binary((*path, i), f"{shown}[{i}]", v)


def _command_item(item: str) -> str | None:
    unknown = [m for m in PLACEHOLDER_RE.findall(item) if m not in PLACEHOLDERS]
    if unknown:
        return (
            f"uses unknown placeholder {{{unknown[0]}}}{close_matches(unknown[0], PLACEHOLDERS)}; "
            f"placeholders are {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
        )
    return None


def _device_item(item: str) -> str | None:
    return None if item.startswith("/") else f"must be an absolute device path like /dev/sdb, not '{item}'"


class _Builder:
    def __init__(self, checker: _Checker, data: dict[str, Any], base_dir: Path, file: str) -> None:
        self.c = checker
        self.data = data
        self.base_dir = base_dir
        self.file = file

    def build(self) -> Inventory:
        self.c.known_keys((), self.data, TOP_LEVEL, "inventory")
        ssh = self.ssh()
        datacenters = {n: self.datacenter(n, e) for n, e in self.section("datacenters").items()}
        racks = {n: self.rack(n, e) for n, e in self.section("racks").items()}
        clusters = {n: self.cluster(n, e) for n, e in self.section("clusters").items()}
        hosts = {n: self.host(n, e) for n, e in self.section("hosts").items()}
        defined = {
            "datacenters": list(datacenters), "racks": list(racks),
            "clusters": list(clusters), "hosts": list(hosts),
        }
        self.check_references(defined)
        final_hosts = {n: self.with_rack_datacenter(h, racks) for n, h in hosts.items() if h is not None}
        self.check_jumps(final_hosts)
        self.check_duplicate_addresses(final_hosts, ssh)
        return Inventory(
            hosts=final_hosts,
            clusters={n: c for n, c in clusters.items() if c is not None},
            datacenters=datacenters,
            racks=racks,
            ssh=ssh,
            source=self.file,
        )

    def section(self, key: str) -> dict[str, Any]:
        section = self.c.mapping((key,), self.data.get(key), f"'{key}'")
        singular = key[:-1]
        for name in section:
            if not NAME_RE.match(name):
                self.c.error(
                    (key, name),
                    f"{singular} name '{name}' is not valid: use letters, digits, '.', '_' and '-', "
                    "starting with a letter or digit",
                )
        return section

    def entry(self, section: str, name: str, value: Any) -> _Entry:
        what = f"{section[:-1]} '{name}'"
        path = (section, name)
        data = self.c.mapping(path, value, what)
        allowed = {
            "datacenters": DATACENTER_KEYS, "racks": RACK_KEYS, "clusters": CLUSTER_KEYS, "hosts": HOST_KEYS,
        }[section]
        self.c.known_keys(path, data, allowed, what)
        return _Entry(self.c, path, data, what, valid=value is None or isinstance(value, dict))

    def ssh(self) -> SSHDefaults:
        data = self.c.mapping(("ssh",), self.data.get("ssh"), "'ssh'")
        self.c.known_keys(("ssh",), data, SSH_KEYS, "ssh")
        e = _Entry(self.c, ("ssh",), data, "ssh")
        defaults = SSHDefaults()
        return SSHDefaults(
            user=e.string("user") or defaults.user,
            port=e.integer("port", 1, 65535) or defaults.port,
            known_hosts=self.path(e.string("known_hosts")),
            key_file=self.path(e.string("key_file")),
            trust_on_first_use=_pick(e.boolean("trust_on_first_use"), defaults.trust_on_first_use),
            connect_timeout=e.seconds("connect_timeout") or defaults.connect_timeout,
            command_timeout=e.seconds("command_timeout") or defaults.command_timeout,
            sudo=_pick(e.boolean("sudo"), defaults.sudo),
        )

    def path(self, value: str | None) -> str | None:
        if value is None:
            return None
        p = Path(os.path.expanduser(value))
        return str(p if p.is_absolute() else self.base_dir / p)

    def datacenter(self, name: str, value: Any) -> Datacenter:
        e = self.entry("datacenters", name, value)
        return Datacenter(
            name=name,
            title=e.string("title") or name,
            contact=e.string("contact"),
            notify=e.string_map("notify", NOTIFY_KEYS),
            extra=e.free_map("extra"),
        )

    def rack(self, name: str, value: Any) -> Rack:
        e = self.entry("racks", name, value)
        return Rack(name=name, datacenter=e.name("datacenter"))

    def cluster(self, name: str, value: Any) -> Cluster | None:
        e = self.entry("clusters", name, value)
        admin_host = e.name("admin_host")
        if "admin_host" not in e.data:
            e.missing("admin_host", "the host of this inventory to run the ceph CLI on")
        ceph = e.strings("ceph", what="strings (the argv prefix of ceph CLI calls)", non_empty=True)
        commands = self.commands(e)
        cluster = Cluster(
            name=name,
            admin_host=admin_host or "",
            datacenter=e.name("datacenter"),
            ceph=ceph or ("ceph",),
            monitoring=e.string_map("monitoring"),
            chat_webhook=e.string("chat_webhook"),
            max_hosts_down=_pick(e.integer("max_hosts_down", 1), 1),
            commands=commands,
            extra=e.free_map("extra"),
        )
        return cluster if admin_host else None

    def commands(self, e: _Entry) -> dict[str, tuple[str, ...]]:
        value = e.data.get("commands")
        if value is None:
            return {}
        if not isinstance(value, dict):
            e.bad("commands", "a mapping of command names to argv lists")
            return {}
        out: dict[str, tuple[str, ...]] = {}
        sub = _Entry(self.c, e.at("commands"), value, f"{e.what}: commands")
        for name in value:
            if not COMMAND_NAME_RE.match(name):
                self.c.error(
                    (*e.path, "commands", name),
                    f"{e.what}: command name '{name}' is not valid: use letters, digits and '_'",
                )
                continue
            argv = sub.strings(name, what="strings (an argv, e.g. [systemctl, stop, \"ceph-osd@{id}\"])",
                               item_ok=_command_item, non_empty=True)
            if argv is not None:
                out[name] = argv
        return out

    def host(self, name: str, value: Any) -> Host | None:
        e = self.entry("hosts", name, value)
        address = e.string("address", hint=" (an IP address or DNS name)")
        if "address" not in e.data:
            e.missing("address", "the IP address or DNS name to connect to")
        elif address is not None and any(ch.isspace() for ch in address):
            self.c.error(e.at("address"), f"{e.what}: address '{address}' contains whitespace")
            address = None
        serial = e.data.get("serial")
        if serial is not None and not isinstance(serial, str):
            self.c.error(
                e.at("serial"),
                f"{e.what}: serial must be a string, not {_kind(serial)}: quote it "
                "(YAML reads unquoted digits as a number and may change them)",
            )
        host = Host(
            name=name,
            address=address or "",
            port=e.integer("port", 1, 65535),
            user=e.string("user"),
            jump=e.name("jump"),
            cluster=e.name("cluster"),
            datacenter=e.name("datacenter"),
            rack=e.name("rack"),
            roles=e.strings("roles", what="role names") or (),
            serial=e.string("serial") if isinstance(serial, str) else None,
            disks=self.disks(e),
            commands=self.commands(e),
            extra=e.free_map("extra"),
        )
        return host if address else None

    def disks(self, e: _Entry) -> tuple[Disk, ...]:
        """``devices``: paths, or mappings with a ``path`` and what a technician needs (slot, serial, model)."""
        value = e.data.get("devices")
        if value is None:
            return ()
        if not isinstance(value, list):
            e.bad("devices", "a list of device paths (or of mappings with path, slot, serial, model)")
            return ()
        disks: list[Disk] = []
        ok = True
        for i, item in enumerate(value):
            disk = self.disk(e, i, item)
            if disk is None:
                ok = False
            elif any(d.path == disk.path for d in disks):
                self.c.error((*e.path, "devices", i), f"{e.what}: devices lists '{disk.path}' twice; remove one")
                ok = False
            else:
                disks.append(disk)
        return tuple(disks) if ok else ()

    def disk(self, e: _Entry, i: int, item: Any) -> Disk | None:
        where = (*e.path, "devices", i)
        shown = f"{e.what}: devices[{i}]"
        if isinstance(item, str) and item:
            complaint = _device_item(item)
            if complaint:
                self.c.error(where, f"{shown} {complaint}")
                return None
            return Disk(item)
        if not isinstance(item, dict):
            self.c.error(where, f"{shown} must be a device path or a mapping with path, slot, serial, model, "
                                f"not {_kind(item)}")
            return None
        before = len(self.c.issues)
        self.c.known_keys(where, item, DISK_KEYS, shown)
        d = _Entry(self.c, where, item, shown)
        path = d.string("path", hint=" (the device path, like /dev/sdb)")
        if "path" not in item:
            d.missing("path", "the device path, like /dev/sdb")
        elif path is not None and _device_item(path):
            self.c.error(d.at("path"), f"{shown}: path {_device_item(path)}")
            path = None
        slot = item.get("slot")
        if isinstance(slot, int) and not isinstance(slot, bool):
            slot = str(slot)
        elif slot is not None:
            slot = d.string("slot", hint=" (the bay or slot label, e.g. 3 or \"front-07\")")
        serial = item.get("serial")
        if serial is not None and not isinstance(serial, str):
            self.c.error(d.at("serial"), f"{shown}: serial must be a string, not {_kind(serial)}: quote it "
                                         "(YAML reads unquoted digits as a number and may change them)")
            serial = None
        elif serial is not None:
            serial = d.string("serial")
        model = d.string("model")
        if path is None or len(self.c.issues) > before:
            return None
        return Disk(path, slot=slot, serial=serial, model=model)

    def check_references(self, defined: Mapping[str, list[str]]) -> None:
        """Every name that points at another entry must be defined."""
        refs = [
            ("racks", "datacenter", "datacenters"),
            ("clusters", "datacenter", "datacenters"),
            ("clusters", "admin_host", "hosts"),
            ("hosts", "jump", "hosts"),
            ("hosts", "cluster", "clusters"),
            ("hosts", "datacenter", "datacenters"),
            ("hosts", "rack", "racks"),
        ]
        for section, key, target in refs:
            entries = self.data.get(section)
            if not isinstance(entries, dict):
                continue
            for name, entry in entries.items():
                if not isinstance(entry, dict):
                    continue
                ref = entry.get(key)
                if ref is None or isinstance(ref, bool | list | dict):
                    continue
                ref = str(ref)
                if ref not in defined[target]:
                    self.c.error(
                        (section, name, key),
                        f"{section[:-1]} '{name}': {key} '{ref}' is not a defined {target[:-1]}"
                        f"{close_matches(ref, defined[target])}; define it under '{target}'",
                    )
                elif section == "hosts" and key == "jump" and ref == name:
                    self.c.error((section, name, key), f"host '{name}': jump names the host itself")

    def with_rack_datacenter(self, host: Host, racks: Mapping[str, Rack]) -> Host:
        """A host in a rack is in the rack's datacenter: inherit it, and refuse a contradiction."""
        rack = racks.get(host.rack) if host.rack else None
        if rack is None or rack.datacenter is None:
            return host
        if host.datacenter is None:
            return replace(host, datacenter=rack.datacenter)
        if host.datacenter != rack.datacenter:
            self.c.error(
                ("hosts", host.name, "datacenter"),
                f"host '{host.name}': datacenter '{host.datacenter}' contradicts its rack '{rack.name}', "
                f"which is in datacenter '{rack.datacenter}'; fix one (or drop the host's datacenter)",
            )
        return host

    def check_jumps(self, hosts: Mapping[str, Host]) -> None:
        reported: set[frozenset[str]] = set()
        for start in hosts:
            chain: list[str] = []
            current: str | None = start
            while current is not None and current in hosts and current not in chain:
                chain.append(current)
                current = hosts[current].jump
            if current is None or current not in chain:
                continue
            cycle = chain[chain.index(current):]
            if len(cycle) < 2 or frozenset(cycle) in reported:
                continue  # a host jumping through itself is reported with the references
            reported.add(frozenset(cycle))
            first = min(cycle)
            i = cycle.index(first)
            ordered = [*cycle[i:], *cycle[:i], first]
            self.c.error(
                ("hosts", first, "jump"),
                f"host '{first}': jump hosts form a cycle {' -> '.join(ordered)}; "
                "one host of the chain must be reachable without a jump",
            )

    def check_duplicate_addresses(self, hosts: Mapping[str, Host], ssh: SSHDefaults) -> None:
        """Two entries reaching the same address and port (through the same jump) are one machine."""
        seen: dict[tuple[str, int, str | None], str] = {}
        for name, host in hosts.items():
            port = host.port if host.port is not None else ssh.port
            key = (host.address.lower(), port, host.jump)
            if key in seen:
                via = f" via '{host.jump}'" if host.jump else ""
                self.c.error(
                    ("hosts", name, "address"),
                    f"host '{name}': same address and port as host '{seen[key]}' "
                    f"({host.address}:{port}{via}); each host needs its own address or port",
                )
            else:
                seen[key] = name


def _pick(value: T | None, default: T) -> T:
    return default if value is None else value
