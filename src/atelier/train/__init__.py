"""Training: the shared trainer (trainer.py), its data (data.py) and the tasks (lite.py; students later)."""
