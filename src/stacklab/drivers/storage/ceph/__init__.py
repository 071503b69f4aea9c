"""Ceph clusters: shared types and helpers, the packages and cephadm implementations, ceph.conf rendering."""
