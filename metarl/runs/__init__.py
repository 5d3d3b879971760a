"""Run folders: model and checkpoint files, the CSV log, the run lock."""
