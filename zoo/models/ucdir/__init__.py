"""ucdir: network, converter, loss, training task and cards."""

from zoo.models.ucdir import modeling  # noqa: F401  (registers the cards)
