"""iSCSI targets: shared types, the tgt and LIO backends, the backend table and the driver."""
