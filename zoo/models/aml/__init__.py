"""aml: network, converter, loss, training task and cards."""

from zoo.models.aml import modeling  # noqa: F401  (registers the cards)
