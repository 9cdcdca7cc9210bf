"""A real, disposable, production-shaped Ceph lab on loopback: 3 mons, an active and a standby mgr, an
admin host, 8 OSDs in 4 host buckets, size-3 and EC 2+1 pools, one sshd per host, Alertmanager and a
receiver standing in for the datacenter technicians. See lab/README.md."""

from lab.core import Lab
from lab.layout import LabError

__all__ = ["Lab", "LabError"]
