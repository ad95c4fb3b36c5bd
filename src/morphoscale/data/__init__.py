"""The data layer: readers that build validated site tables, the zarr image store, torch datasets."""
