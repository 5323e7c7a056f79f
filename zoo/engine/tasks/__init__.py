"""One training task per method (see :mod:`zoo.engine.tasks.base`)."""
