"""Data preparation: raw SA-1B / SA-V / DAVIS-style datasets to WebDataset shards."""
