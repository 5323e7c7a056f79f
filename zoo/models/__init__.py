"""One module per method; each registers its :class:`~zoo.registry.ModelInfo` on import."""
