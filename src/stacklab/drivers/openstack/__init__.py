"""OpenStack services: the service driver, the role table and one module per role."""
