"""dycl: network, converter, loss, training task and cards."""

from zoo.models.dycl import modeling  # noqa: F401  (registers the cards)
