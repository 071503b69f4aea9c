"""The suites' fixtures for a plain `pytest` run of this directory (`stacklab verify` loads the same plugin with
`-p`, which is how a user's own file outside this directory gets them too): see lab_fixtures.py."""

pytest_plugins = ["stacklab.suites.lab_fixtures"]
