"""ppt-labels pipeline: datasets in, a versioned label store of Parquet tables and Zarr out."""

__version__ = "0.1.0"
