"""Training: parameter groups, lr schedules (optim.py)."""
