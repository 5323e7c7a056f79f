"""cvft: network, converter, loss, training task and cards."""

from zoo.models.cvft import modeling  # noqa: F401  (registers the cards)
