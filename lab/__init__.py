"""A real, disposable Ceph lab on loopback: mon, mgr, 8 memstore OSDs in 4 host buckets, one sshd per
host, Alertmanager and a receiver standing in for the datacenter technicians. See lab/README.md."""

from lab.core import Lab
from lab.layout import LabError

__all__ = ["Lab", "LabError"]
