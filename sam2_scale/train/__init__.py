"""Training: optimiser and schedules (the trainer loop arrives with the trainer issue)."""
