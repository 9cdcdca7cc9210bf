"""Which physical disks back which OSDs: what the datacenter technicians need to pull the right drive.

``ceph.disks_of`` reads ``ceph osd tree`` (host of each OSD), ``ceph osd metadata N`` (each OSD's
``devices``, ``device_ids``, ``device_paths``, ``bluestore_bdev_*``, ``bluefs_db/wal_devices``) and
``ceph device ls`` (the mgr's device table, the same rows ``ceph device ls-by-daemon osd.N`` prints),
then adds the slot, serial and model the inventory gives for the host's ``devices``.

Quirks seen on a real Pacific (16.2.15) cluster (samples: tests/data/ceph-samples/devices/):

- a memstore OSD reports ``devices: ""`` and no ``bluestore_bdev_*``, yet ``rotational: "1"`` and
  ``default_device_class: "hdd"``: neither says anything about a disk;
- a device without a unique id (loop, virtio without serial) has empty ``device_ids`` and is missing
  from ``ceph device ls``; bluestore on a file names the disk holding the file (``vda``);
- metadata survives ``osd down`` and ``osd destroy`` and is gone after ``osd purge`` (ENOENT): read the
  disks before purging;
- a device id is ``VENDOR_MODEL_SERIAL`` (or ``MODEL_SERIAL``) with spaces turned into ``_``: the
  serial is the part after the last ``_``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from engine.errors import ActionError, CommandFailed

CEPH_TIMEOUT = 120.0
ENOENT = 2
UNKNOWN = "unknown"

ROW_KEYS = ("osd", "host", "path", "by_path", "slot", "serial", "model", "device_id", "type", "size_bytes",
            "role", "source")
"""The fields of one disk row (``ceph.disks_of`` result ``disks``; what ``dc.notify`` and ``dc.locate`` take)."""


@dataclass(frozen=True)
class CephDevice:
    """One kernel device an OSD uses, as Ceph reports it."""

    name: str
    roles: tuple[str, ...]
    device_id: str | None
    by_path: str | None

    @property
    def path(self) -> str:
        return f"/dev/{self.name}"

    @property
    def serial(self) -> str | None:
        return split_device_id(self.device_id)[1] if self.device_id else None

    @property
    def model(self) -> str | None:
        return split_device_id(self.device_id)[0] if self.device_id else None


@dataclass(frozen=True)
class OsdDevices:
    """What Ceph knows about the disks of one OSD."""

    osd: int
    hostname: str | None
    objectstore: str | None
    devices: tuple[CephDevice, ...]
    type: str | None
    rotational: bool | None
    size_bytes: int | None
    notes: tuple[str, ...] = ()


def split_device_id(device_id: str) -> tuple[str | None, str | None]:
    """``(model, serial)`` of a Ceph device id: ``SAMSUNG_MZ7KM960HMJP-00005_S3F3NX0K501737`` ->
    ``("SAMSUNG MZ7KM960HMJP-00005", "S3F3NX0K501737")``. The model keeps the vendor when Ceph put one."""
    head, sep, serial = device_id.rpartition("_")
    if not sep:
        return None, device_id or None
    return head.replace("_", " ") or None, serial or None


def _pairs(value: Any) -> dict[str, str]:
    """``"sda=X,nvme0n1=Y"`` -> ``{"sda": "X", "nvme0n1": "Y"}``."""
    out: dict[str, str] = {}
    for item in str(value or "").split(","):
        name, sep, val = item.partition("=")
        if sep and name.strip() and val.strip():
            out[name.strip()] = val.strip()
    return out


def _names(value: Any) -> list[str]:
    return [n.strip() for n in str(value or "").split(",") if n.strip()]


def _flag(value: Any) -> bool | None:
    return {"1": True, "0": False}.get(str(value)) if value is not None else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def osd_devices(metadata: Mapping[str, Any]) -> OsdDevices:
    """Parse one entry of ``ceph osd metadata [-f json]``."""
    osd = int(metadata["id"])
    store = metadata.get("osd_objectstore") or None
    names = _names(metadata.get("devices"))
    physical = [n for n in names if not n.startswith("dm-")]
    names = physical or names  # "dm-3,sdc": the LV and the disk under it; the disk is what is swapped
    roles: dict[str, list[str]] = {n: [] for n in names}
    for key, role in (("bluestore_bdev_devices", "data"), ("bluefs_db_devices", "db"), ("bluefs_wal_devices", "wal")):
        for n in _names(metadata.get(key)):
            if n in roles:
                roles[n].append(role)
    ids, paths = _pairs(metadata.get("device_ids")), _pairs(metadata.get("device_paths"))
    devices = tuple(CephDevice(n, tuple(roles[n]), ids.get(n), paths.get(n)) for n in names)
    notes: list[str] = []
    if not devices:
        why = "memstore keeps its data in RAM" if store == "memstore" else f"objectstore {store or UNKNOWN}"
        notes.append(f"Ceph reports no disk for osd.{osd} ({why})")
    for d in devices:
        if d.device_id is None:
            notes.append(f"osd.{osd}: no serial for {d.name} (no unique device id: a virtual or loop device?)")
    if metadata.get("bluestore_bdev_access_mode") == "file" and devices:
        notes.append(f"osd.{osd}: bluestore on a file ({metadata.get('bluestore_bdev_path')}) on {names[0]}")
    rotational = _flag(metadata.get("bluestore_bdev_rotational")) if devices else None
    kind = metadata.get("bluestore_bdev_type") or None
    if kind is None and rotational is not None:
        kind = "hdd" if rotational else "ssd"
    return OsdDevices(
        osd=osd,
        hostname=metadata.get("hostname") or None,
        objectstore=store,
        devices=devices,
        type=kind if devices else None,
        rotational=rotational,
        size_bytes=_int(metadata.get("bluestore_bdev_size")) if devices else None,
        notes=tuple(notes),
    )


def device_table(device_ls: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """``ceph device ls -f json`` by daemon: ``{"osd.3": [{"device_id", "dev", "path"}]}``."""
    out: dict[str, list[dict[str, str]]] = {}
    for entry in device_ls:
        devid = str(entry.get("devid") or "")
        for daemon in entry.get("daemons") or []:
            for loc in entry.get("location") or [{}]:
                out.setdefault(str(daemon), []).append(
                    {"device_id": devid, "dev": str(loc.get("dev") or ""), "path": str(loc.get("path") or "")}
                )
    return out


def with_device_table(osd: OsdDevices, table: Mapping[str, list[dict[str, str]]]) -> OsdDevices:
    """Fill device ids and by-path links the metadata lacks from the mgr's device table."""
    rows = table.get(f"osd.{osd.osd}", [])
    if not rows:
        return osd
    by_dev = {r["dev"]: r for r in rows if r.get("dev")}
    devices = []
    for d in osd.devices:
        row = by_dev.get(d.name)
        if row is None:
            devices.append(d)
            continue
        devices.append(CephDevice(d.name, d.roles, d.device_id or row.get("device_id") or None,
                                  d.by_path or row.get("path") or None))
    known = {d.name for d in devices}
    devices += [CephDevice(r["dev"], (), r.get("device_id") or None, r.get("path") or None)
                for r in rows if r.get("dev") and r["dev"] not in known]
    notes = tuple(n for n in osd.notes if not (n.startswith("Ceph reports no disk") and devices))
    return OsdDevices(osd.osd, osd.hostname, osd.objectstore, tuple(devices), osd.type, osd.rotational,
                      osd.size_bytes, notes)


def _match(device: CephDevice, disks: Iterable[Any]) -> Any:
    """The inventory disk that is this device: same serial, else same path or by-path link."""
    disks = list(disks)
    serial = device.serial
    if serial:
        for disk in disks:
            if disk.serial and disk.serial == serial:
                return disk
    for disk in disks:
        if disk.path in (device.path, device.by_path):
            return disk
    return None


def disk_rows(osds: Iterable[OsdDevices], hosts: Mapping[int, str | None], inventory_disks: Mapping[str, Iterable[Any]],
              whole_hosts: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One row per disk (see :data:`ROW_KEYS`); ``None`` where nothing knows the value.

    ``inventory_disks`` are the inventory's disks per host; for the ``whole_hosts`` (a host replaced as a
    whole), its disks no OSD row matched are listed too, with ``osd`` None and ``source`` "inventory".
    """
    rows: list[dict[str, Any]] = []
    used: dict[str, set[str]] = {}
    for o in osds:
        host = hosts.get(o.osd)
        candidates = list(inventory_disks.get(host or "", ()))
        for d in o.devices:
            disk = _match(d, candidates)
            if disk is not None:
                used.setdefault(host or "", set()).add(disk.path)
            rows.append({
                "osd": o.osd,
                "host": host,
                "path": d.path,
                "by_path": d.by_path,
                "slot": disk.slot if disk is not None else None,
                "serial": d.serial or (disk.serial if disk is not None else None),
                "model": d.model or (disk.model if disk is not None else None),
                "device_id": d.device_id,
                "type": o.type,
                "size_bytes": o.size_bytes,
                "role": "+".join(d.roles) or None,
                "source": "ceph+inventory" if disk is not None else "ceph",
            })
    for host in whole_hosts:
        for disk in inventory_disks.get(host, ()):
            if disk.path in used.get(host, set()):
                continue
            rows.append({
                "osd": None, "host": host, "path": disk.path, "by_path": None, "slot": disk.slot,
                "serial": disk.serial, "model": disk.model, "device_id": None, "type": None, "size_bytes": None,
                "role": None, "source": "inventory",
            })
    return rows


def osd_hosts(tree: Mapping[str, Any]) -> dict[int, str]:
    """The CRUSH host bucket of every OSD in ``ceph osd tree -f json``."""
    out: dict[int, str] = {}
    for node in tree.get("nodes") or []:
        if node.get("type") == "host":
            for child in node.get("children") or []:
                if int(child) >= 0:
                    out[int(child)] = str(node["name"])
    return out


def size_text(size: Any) -> str:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return UNKNOWN
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def normalize_rows(rows: Any, what: str = "disks") -> list[dict[str, Any]]:
    """Validate disk rows given to an action (a list of mappings); keep the known fields only."""
    if not isinstance(rows, list | tuple):
        raise ActionError(f"{what} must be a list of disk rows (the 'disks' of ceph.disks_of), not {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ActionError(f"{what}[{i}] must be a mapping with path, slot, serial, model..., not {row!r:.60}")
        out.append({k: row.get(k) for k in ROW_KEYS})
    return out


def disk_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows as an aligned plain-text table (for mail, tickets and chat); unknown values say so.

    The by-path and role columns appear only when some row has one."""
    rows = list(rows)
    columns: list[tuple[str, Any]] = [
        ("OSD", lambda r: f"osd.{r['osd']}" if r.get("osd") is not None else "-"),
        ("Host", lambda r: r.get("host")),
        ("Path", lambda r: r.get("path")),
        ("Slot", lambda r: r.get("slot")),
        ("Serial", lambda r: r.get("serial")),
        ("Model", lambda r: r.get("model")),
        ("Type", lambda r: r.get("type")),
        ("Size", lambda r: size_text(r.get("size_bytes"))),
    ]
    if any(r.get("role") not in (None, "data") for r in rows):
        columns.append(("Role", lambda r: r.get("role")))
    if any(r.get("by_path") for r in rows):
        columns.append(("By-path", lambda r: r.get("by_path")))
    lines = [[title for title, _ in columns]]
    lines += [[str(get(r) or UNKNOWN) for _, get in columns] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines) + "\n"


def _read(ctx: ActionContext, cluster: Any, *args: str, check: bool = True) -> Any:
    result = ctx.ssh.run(cluster.admin_host, [*cluster.ceph, *args, "-f", "json"], timeout=CEPH_TIMEOUT,
                         mutating=False, check=check)
    if result.exit_code != 0:
        return None
    return cj.loads(result.stdout, "ceph " + " ".join(args))


def _metadata(ctx: ActionContext, cluster: Any, osd: int) -> dict[str, Any] | None:
    """``ceph osd metadata N``, one OSD at a time (the whole cluster's would flood the step log);
    None when Ceph has none (ENOENT: never booted, or purged)."""
    argv = [*cluster.ceph, "osd", "metadata", str(osd), "-f", "json"]
    result = ctx.ssh.run(cluster.admin_host, argv, timeout=CEPH_TIMEOUT, mutating=False, check=False)
    if result.exit_code == ENOENT:
        return None
    if result.exit_code != 0:
        raise CommandFailed(cluster.admin_host, argv, result.exit_code, result.stderr)
    data = cj.loads(result.stdout, f"ceph osd metadata {osd}")
    if not isinstance(data, dict):
        raise ActionError(f"'ceph osd metadata {osd}' did not print a JSON object: {result.stdout.strip()[:200]!r}")
    return data


@action("ceph.disks_of")
def disks_of(ctx: ActionContext, *, cluster: str, host: str | None = None, osds: list[int] | None = None) -> dict[str, Any]:
    """Which disks back the OSDs of ``host`` (or of ``osds``): path, serial, model, type, size, slot.

    One row per disk in ``disks`` (also the by-path link and the OSD's role for the disk; the slot comes
    from the inventory's ``devices``); unknown values are null and ``notes`` say why.

    Read-only (runs in dry-run too). Run it before the OSDs are purged: Ceph forgets a purged OSD's
    metadata. For a whole host, disks of its inventory ``devices`` that no OSD matched are listed too.
    """
    if (host is None) == (osds is None):
        raise ActionError("ceph.disks_of: give either 'host' or 'osds'")
    c = ctx.inventory.cluster(cluster)
    tree = _read(ctx, c, "osd", "tree")
    placement = osd_hosts(tree)
    if host is not None:
        ids = cj.host_osds(tree, host)
        if ids is None:
            raise ActionError(f"no CRUSH host bucket '{host}' in cluster {cluster}: check 'ceph osd tree'")
    else:
        assert osds is not None
        if not osds:
            raise ActionError("ceph.disks_of: no OSD ids given")
        ids = sorted(set(osds))
    metadata = {osd: m for osd in ids if (m := _metadata(ctx, c, osd)) is not None}
    listing = _read(ctx, c, "device", "ls", check=False)
    notes: list[str] = []
    if listing is None:
        notes.append("'ceph device ls' failed (is the mgr up?): device ids come from the OSD metadata only")
    table = device_table(listing or [])
    parsed: list[OsdDevices] = []
    for osd in ids:
        if osd not in metadata:
            notes.append(f"no metadata for osd.{osd} (never booted, or purged): its disk is unknown to Ceph")
            continue
        parsed.append(with_device_table(osd_devices(metadata[osd]), table))
    known_hosts = ctx.inventory.hosts
    hosts: dict[int, str | None] = {}
    for osd in ids:
        hostname = metadata.get(osd, {}).get("hostname")
        hosts[osd] = placement.get(osd) or host or (hostname if hostname in known_hosts else None)
    inventory_disks = {name: h.disks for name, h in known_hosts.items()}
    rows = disk_rows(parsed, hosts, inventory_disks, whole_hosts=[host] if host else [])
    for o in parsed:
        notes.extend(o.notes)
    unknown = [o for o in ids if not any(r["osd"] == o for r in rows)]
    if unknown and host and any(r["source"] == "inventory" for r in rows):
        notes.append(f"the disks of {cj.names(unknown)} are not known to Ceph; the inventory lists "
                     f"{sum(r['source'] == 'inventory' for r in rows)} disk(s) for {host}")
    for line in notes:
        ctx.log.info(line)
    ctx.log.info(f"{len(rows)} disk(s) for {host or cj.names(ids)}:\n{disk_table(rows)}")
    return {
        "cluster": cluster,
        "host": host,
        "osds": [_osd_dict(o, hosts.get(o.osd)) for o in parsed],
        "disks": rows,
        "unknown_osds": unknown,
        "notes": notes,
    }


def _osd_dict(o: OsdDevices, host: str | None) -> dict[str, Any]:
    return {
        "osd": o.osd,
        "host": host,
        "hostname": o.hostname,
        "objectstore": o.objectstore,
        "type": o.type,
        "rotational": o.rotational,
        "size_bytes": o.size_bytes,
        "devices": [{"name": d.name, "path": d.path, "by_path": d.by_path, "device_id": d.device_id,
                     "serial": d.serial, "model": d.model, "roles": list(d.roles)} for d in o.devices],
        "notes": list(o.notes),
    }
