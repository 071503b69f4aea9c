"""Drivers, grouped by what they build: nodes/, storage/ (iscsi, nfs, lvm, ceph) and openstack/; base.py is the
contract. Drivers do I/O only through what the DriverContext gives them."""
