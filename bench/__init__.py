"""`make bench`: the reproducible benchmark of verifier (see run.py)."""
