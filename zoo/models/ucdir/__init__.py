"""ucdir: network, converter, losses, training task (memory banks, clustering) and cards."""

from zoo.models.ucdir.cards import MODEL

__all__ = ["MODEL"]
