"""The inventory: which hosts exist, which cluster each serves, where it stands and how to reach it."""

from inventory.model import Cluster, Datacenter, Host, Inventory, Rack, SSHDefaults
from inventory.parse import parse_inventory
from inventory.sources import InventorySource, YamlInventorySource, load_inventory

__all__ = [
    "Cluster",
    "Datacenter",
    "Host",
    "Inventory",
    "InventorySource",
    "Rack",
    "SSHDefaults",
    "YamlInventorySource",
    "load_inventory",
    "parse_inventory",
]
