"""Resources, the dependency DAG and the pure diff. No I/O here: drivers observe."""
