"""Everything that runs at a hospital: de-identification, pixels, ingest, the encrypted store, training."""

__all__: list[str] = []
