"""Checkpoints ``bench eval --checkpoint`` reads: tvr-bench's own (``best.pt`` / ``last.pt``) and state dicts saved
by a method's official code (``official.py`` holds the name mappings, ``loading.py`` detects and loads)."""
