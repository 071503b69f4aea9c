"""stacklab: provision OpenStack storage labs from one YAML file and prove they work."""

__version__ = "0.1.0"
