"""Client data: phantom generators, real-data importers, Zarr client stores, partitioning, datasets."""
