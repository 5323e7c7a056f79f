"""Readers for each benchmark's real on-disk layout, and training samplers.

One module per benchmark family; each registers its evaluation splits with
:func:`zoo.data.base.register_eval_dataset` (modules here are imported on demand).
"""
