"""Training checkpoints as files: the folder layout (layout.py), reads that cannot run code
(safe_load.py) and the model weights of any checkpoint (weights.py). Writing them is the
trainer's (train/checkpoint.py) and each engine's."""
