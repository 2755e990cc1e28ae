"""The DVC stages, one thin module each: load params, call dd, write the outputs dvc.yaml declares.

Each module has `run(...)`; `dd <stage>` (dd/cli.py) and dvc.yaml both call it, with the same params.
"""
