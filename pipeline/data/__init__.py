"""Datasets as read-only views of files on disk: the adapter contract and its registry, the dataset
specs of data_manifests/, the refer, ImageNet and composite adapters, the synthetic generator and
the restricted refs unpickler."""
