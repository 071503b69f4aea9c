"""Storage a lab serves: iSCSI targets, NFS exports, LVM volume groups and Ceph clusters (one package each)."""
