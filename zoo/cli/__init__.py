"""Command lines of the zoo: ``python -m zoo train`` and ``python -m zoo eval`` (also ``training/train.py`` and ``eval/reproduce.py``)."""
