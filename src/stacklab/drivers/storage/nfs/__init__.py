"""NFS exports: shared types, the Ganesha and knfsd backends, the backend table and the driver."""
