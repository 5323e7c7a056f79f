"""dycl: network, converter, loss, training task and cards."""

from zoo.models.dycl.cards import MODEL

__all__ = ["MODEL"]
