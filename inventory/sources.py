"""Where an inventory comes from.

An :class:`InventorySource` is anything with ``load() -> Inventory``. The YAML file is the only one
shipped. Another source, such as a NetBox-style CMDB over HTTP, would look like this::

    class NetboxInventorySource:
        def __init__(self, url: str, token: str, http: requests.Session) -> None: ...

        def load(self) -> Inventory:
            # GET /api/dcim/sites/, /api/dcim/racks/, /api/dcim/devices/?role=storage (follow "next"
            # links page by page); map site -> Datacenter, rack -> Rack, device -> Host (primary_ip
            # without the prefix length -> address, serial, custom fields -> roles/cluster/devices,
            # everything else -> extra) and a "ceph cluster" custom object -> Cluster.
            # Then run the same checks as the YAML source: build the plain document of
            # docs/inventory-format.md and validate it, so a bad CMDB record is reported like a
            # bad YAML line (with the record's URL as the location's file).
            # Raise ConnectionFailed on network errors and InventoryError on a 4xx answer, naming
            # the URL; never return a partial inventory.
            ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from engine.errors import InventoryError
from inventory.model import Inventory
from inventory.parse import parse_inventory


@runtime_checkable
class InventorySource(Protocol):
    def load(self) -> Inventory: ...


class YamlInventorySource:
    """An inventory YAML file (docs/inventory-format.md), read again on every :meth:`load`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> Inventory:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise InventoryError(
                f"inventory file {self.path} does not exist: check the path "
                "(see docs/inventory-format.md for the format)"
            ) from None
        except IsADirectoryError:
            raise InventoryError(f"inventory {self.path} is a directory: name the YAML file") from None
        except OSError as e:
            raise InventoryError(f"cannot read inventory file {self.path}: {e.strerror or e}") from None
        return parse_inventory(raw, str(self.path), base_dir=self.path.resolve().parent)

    def __repr__(self) -> str:
        return f"YamlInventorySource({str(self.path)!r})"


def load_inventory(path: str | Path) -> Inventory:
    """Load and validate an inventory YAML file.

    Raises :class:`InventoryError` when the file cannot be read and :class:`ValidationError` (listing
    every problem with its file:line:column) when its content is wrong.
    """
    return YamlInventorySource(path).load()
