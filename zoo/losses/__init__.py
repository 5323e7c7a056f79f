"""The papers' losses, one module per method."""
