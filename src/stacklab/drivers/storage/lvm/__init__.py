"""LVM volume groups on a node (and the logical volumes other storage drivers carve from them)."""
