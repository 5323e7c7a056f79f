"""aml: students and teachers, converter for AML and cirtorch files, losses, training task and cards."""

from zoo.models.aml.cards import MODEL

__all__ = ["MODEL"]
