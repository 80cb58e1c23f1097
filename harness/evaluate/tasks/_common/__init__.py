"""Shared lm-eval hook module (``utils.py``) and YAML templates of the harness tasks."""
