"""ppt-labels pipeline: datasets in, a versioned label store of Parquet tables and Zarr arrays out."""

__version__ = "0.1.0"
