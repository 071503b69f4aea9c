"""Running external commands: one Runner protocol, a local and a fake implementation (SSH comes with nodes)."""

from stacklab.exec.runner import CommandError, CommandResult, CommandTimeout, LocalRunner, Runner

__all__ = ["CommandError", "CommandResult", "CommandTimeout", "LocalRunner", "Runner"]
