"""Everything that runs at the aggregator: strategy, ServerApp, provisioning."""

__all__: list[str] = []
