"""Commands of this group are added by their issue; see orchestrator/cli.py."""


def register(group) -> None:
    pass
