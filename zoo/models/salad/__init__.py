"""salad: network, converter, loss, training task and cards."""

from zoo.models.salad.cards import MODEL

__all__ = ["MODEL"]
