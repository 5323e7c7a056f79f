"""salad: network, converter, loss, training task and cards."""

from zoo.models.salad import modeling  # noqa: F401  (registers the cards)
