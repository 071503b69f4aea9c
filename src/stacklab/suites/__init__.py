"""Verification suites shipped with stacklab: plain pytest-testinfra modules run over SSH against lab nodes.

`stacklab verify` writes the lab's context (nodes, addresses, outputs of every resource) to a JSON file and runs
pytest on this package with STACKLAB_LAB_CONTEXT pointing at it. Each suite is one module: test_<suite>.py.
"""
