"""cvft: network, TensorFlow checkpoint reader and converter, loss, training task and cards."""

from zoo.models.cvft.cards import MODEL

__all__ = ["MODEL"]
