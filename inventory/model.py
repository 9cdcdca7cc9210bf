"""The inventory: hosts, the clusters they serve, where they stand, and how to reach them.

Everything here is immutable: mappings are read-only views and sequences are tuples, so a loaded
inventory can be shared between steps without one step changing what another sees.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import difflib
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from engine.errors import InventoryError

PLACEHOLDERS = ("id", "device", "host", "slot", "serial")
"""The ``{name}`` placeholders a cluster command may use; each is substituted per argv item."""

LOCATE_COMMANDS = ("locate_on", "locate_off")
"""Optional commands (per cluster or per host) that switch a disk's locate LED; no default."""

T = TypeVar("T")

PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

DEFAULT_COMMANDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "osd_stop": ("systemctl", "stop", "ceph-osd@{id}"),
    "osd_start": ("systemctl", "start", "ceph-osd@{id}"),
    "osd_create": ("ceph-volume", "lvm", "create", "--osd-id", "{id}", "--data", "{device}"),
    "osd_zap": ("ceph-volume", "lvm", "zap", "--destroy", "{device}"),
})


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def close_matches(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x' or 'y'?)`` for the candidates that look like ``word``, else ``''``."""
    found = difflib.get_close_matches(word, sorted(candidates), n=3, cutoff=0.6)
    if not found:
        return ""
    quoted = [f"'{f}'" for f in found]
    options = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f" (did you mean {options}?)"


@dataclass(frozen=True)
class SSHDefaults:
    """How every host is reached unless the host says otherwise."""

    user: str = "root"
    port: int = 22
    known_hosts: str | None = None
    key_file: str | None = None
    trust_on_first_use: bool = False
    connect_timeout: float = 10
    command_timeout: float = 600
    sudo: bool = False


@dataclass(frozen=True)
class Datacenter:
    name: str
    title: str = ""
    contact: str | None = None
    notify: Mapping[str, str] = field(default_factory=dict, hash=False)
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _set(self, "title", self.title or self.name)
        _set(self, "notify", _frozen(self.notify))
        _set(self, "extra", _frozen(self.extra))


@dataclass(frozen=True)
class Rack:
    name: str
    datacenter: str | None = None


@dataclass(frozen=True)
class Cluster:
    name: str
    admin_host: str
    datacenter: str | None = None
    ceph: tuple[str, ...] = ("ceph",)
    monitoring: Mapping[str, str] = field(default_factory=dict, hash=False)
    chat_webhook: str | None = None
    max_hosts_down: int = 1
    commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    """Given commands, merged over :data:`DEFAULT_COMMANDS`."""
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _set(self, "ceph", tuple(self.ceph))
        _set(self, "monitoring", _frozen(self.monitoring))
        merged = {**DEFAULT_COMMANDS, **{k: tuple(v) for k, v in self.commands.items()}}
        _set(self, "commands", MappingProxyType(merged))
        _set(self, "extra", _frozen(self.extra))

    def command(self, name: str, **values: str | int) -> list[str]:
        """The argv of command ``name`` with ``{id}``, ``{device}``, ``{host}``... substituted."""
        if name not in self.commands:
            raise InventoryError(
                f"cluster '{self.name}' has no command '{name}'{close_matches(name, self.commands)}: "
                f"known commands are {', '.join(sorted(self.commands))}"
            )
        return render_command(f"cluster '{self.name}'", name, self.commands[name], values)


def placeholders_of(template: Iterable[str]) -> list[str]:
    """The ``{name}`` placeholders a command template uses, in order of first use."""
    return list(dict.fromkeys(m for item in template for m in PLACEHOLDER_RE.findall(item)))


def render_command(owner: str, name: str, template: Iterable[str], values: Mapping[str, str | int]) -> list[str]:
    """``template`` with each ``{placeholder}`` replaced by its value, once, per argv item.

    A value is never re-read as a template, so a device path holding ``{host}`` stays literal.
    """
    unknown = sorted(set(values) - set(PLACEHOLDERS))
    if unknown:
        raise InventoryError(
            f"command '{name}': unknown placeholder value(s) {', '.join(unknown)}; "
            f"commands take {', '.join(PLACEHOLDERS)}"
        )

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise InventoryError(f"command '{name}' of {owner} needs a value for {{{key}}}")
        return str(values[key])

    return [PLACEHOLDER_RE.sub(replace, item) for item in template]


@dataclass(frozen=True)
class Disk:
    """A disk of a host as the inventory knows it: its path and, when known, where a technician finds it."""

    path: str
    slot: str | None = None
    serial: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class Host:
    """One machine. ``port``/``user`` are None when the inventory's SSH defaults apply."""

    name: str
    address: str
    port: int | None = None
    user: str | None = None
    jump: str | None = None
    cluster: str | None = None
    datacenter: str | None = None
    rack: str | None = None
    roles: tuple[str, ...] = ()
    serial: str | None = None
    devices: tuple[str, ...] = ()
    """Device paths (what OSDs are created on)."""
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)
    disks: tuple[Disk, ...] = ()
    """The same devices with slot, serial and model where the inventory gives them (one per path)."""
    commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    """Commands of this host that override its cluster's (e.g. a different ``locate_on``)."""

    def __post_init__(self) -> None:
        _set(self, "roles", tuple(self.roles))
        disks = tuple(self.disks)
        devices = tuple(self.devices) or tuple(d.path for d in disks)
        known = {d.path for d in disks}
        disks += tuple(Disk(p) for p in devices if p not in known)
        _set(self, "devices", devices)
        _set(self, "disks", disks)
        _set(self, "commands", MappingProxyType({k: tuple(v) for k, v in self.commands.items()}))
        _set(self, "extra", _frozen(self.extra))

    def disk(self, path: str) -> Disk | None:
        return next((d for d in self.disks if d.path == path), None)


def _plain(value: Any) -> Any:
    """A deep copy made of dicts, lists and scalars only (what JSON and templates expect).

    YAML reads an unquoted ``2027-03-31`` in ``extra`` as a date: it becomes its ISO text here.
    """
    if isinstance(value, datetime.date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return copy.copy(value)


@dataclass(frozen=True)
class Inventory:
    hosts: Mapping[str, Host] = field(default_factory=dict, hash=False)
    clusters: Mapping[str, Cluster] = field(default_factory=dict, hash=False)
    datacenters: Mapping[str, Datacenter] = field(default_factory=dict, hash=False)
    racks: Mapping[str, Rack] = field(default_factory=dict, hash=False)
    ssh: SSHDefaults = field(default_factory=SSHDefaults)
    source: str = "<empty>"

    def __post_init__(self) -> None:
        for name in ("hosts", "clusters", "datacenters", "racks"):
            _set(self, name, _frozen(getattr(self, name)))

    @classmethod
    def empty(cls) -> Inventory:
        return cls()

    def host(self, name: str) -> Host:
        return self._lookup("host", self.hosts, name)

    def cluster(self, name: str) -> Cluster:
        return self._lookup("cluster", self.clusters, name)

    def datacenter(self, name: str) -> Datacenter:
        return self._lookup("datacenter", self.datacenters, name)

    def rack(self, name: str) -> Rack:
        return self._lookup("rack", self.racks, name)

    def _lookup(self, kind: str, table: Mapping[str, T], name: str) -> T:
        try:
            return table[name]
        except KeyError:
            pass
        if not table:
            raise InventoryError(f"unknown {kind} '{name}': the inventory {self.source} defines no {kind}s")
        raise InventoryError(
            f"unknown {kind} '{name}'{close_matches(name, table)}: "
            f"the inventory {self.source} defines {len(table)} {kind}(s), see 'hotswap inventory'"
        )

    def select(
        self,
        *,
        cluster: str | None = None,
        role: str | None = None,
        rack: str | None = None,
        datacenter: str | None = None,
        pattern: str | None = None,
    ) -> list[Host]:
        """Hosts matching every given filter, sorted by name; ``pattern`` is a glob on the host name.

        Naming a cluster, rack or datacenter the inventory does not define raises
        :class:`InventoryError` rather than silently selecting nothing.
        """
        if cluster is not None:
            self.cluster(cluster)
        if rack is not None:
            self.rack(rack)
        if datacenter is not None:
            self.datacenter(datacenter)
        return [
            h for _, h in sorted(self.hosts.items())
            if (cluster is None or h.cluster == cluster)
            and (role is None or role in h.roles)
            and (rack is None or h.rack == rack)
            and (datacenter is None or h.datacenter == datacenter)
            and (pattern is None or fnmatch.fnmatchcase(h.name, pattern))
        ]

    def hosts_of_cluster(self, cluster: str) -> list[Host]:
        return self.select(cluster=cluster)

    def host_command(self, host: str, name: str) -> tuple[str, ...] | None:
        """The argv template of command ``name`` for ``host``: the host's own, else its cluster's, else None."""
        h = self.host(host)
        if name in h.commands:
            return h.commands[name]
        if h.cluster and h.cluster in self.clusters:
            return self.clusters[h.cluster].commands.get(name)
        return None

    def as_dict(self) -> dict[str, Any]:
        """Everything as given in the source (None where a default applies); JSON-serialisable."""
        return {
            "source": self.source,
            "ssh": _plain(vars(self.ssh)),
            "datacenters": {n: self._datacenter_dict(d) for n, d in sorted(self.datacenters.items())},
            "racks": {n: {"name": r.name, "datacenter": r.datacenter} for n, r in sorted(self.racks.items())},
            "clusters": {n: self._cluster_dict(c) for n, c in sorted(self.clusters.items())},
            "hosts": {n: _plain(vars(h)) for n, h in sorted(self.hosts.items())},
        }

    def as_template_context(self) -> dict[str, Any]:
        """Plain data for templates. Hosts carry their effective SSH ``port`` and ``user``;
        clusters, datacenters and racks carry the sorted names of their ``hosts``."""
        hosts = {}
        for name, h in sorted(self.hosts.items()):
            entry = _plain(vars(h))
            entry["port"] = h.port if h.port is not None else self.ssh.port
            entry["user"] = h.user if h.user is not None else self.ssh.user
            hosts[name] = entry
        clusters = {
            n: {**self._cluster_dict(c), "hosts": [h.name for h in self.select(cluster=n)]}
            for n, c in sorted(self.clusters.items())
        }
        datacenters = {
            n: {**self._datacenter_dict(d), "hosts": [h.name for h in self.select(datacenter=n)]}
            for n, d in sorted(self.datacenters.items())
        }
        racks = {
            n: {"name": r.name, "datacenter": r.datacenter, "hosts": [h.name for h in self.select(rack=n)]}
            for n, r in sorted(self.racks.items())
        }
        return {"hosts": hosts, "clusters": clusters, "datacenters": datacenters, "racks": racks}

    @staticmethod
    def _cluster_dict(c: Cluster) -> dict[str, Any]:
        out: dict[str, Any] = _plain(vars(c))
        out["commands"] = {k: list(v) for k, v in sorted(c.commands.items())}
        return out

    @staticmethod
    def _datacenter_dict(d: Datacenter) -> dict[str, Any]:
        return dict(_plain(vars(d)))
