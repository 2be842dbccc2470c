"""The label store (DESIGN §2): table schemas and the stage→table map, sharded Parquet/Zarr
writing, stage records, the reader, the manifest (finalize) and validation."""
