"""Run folders without Lightning: their files (folder.py), checkpoint files (checkpoint_file.py), the
backbone set-up a run is trained and rebuilt with (backbone.py), and `load_run` for inference (load.py)."""

from lightft.runs.load import LoadedRun, load_run  # noqa: F401
