"""The ``opsagent`` command: its subcommands, the broker client they use, selftest and
the capability scaffold."""
