"""Training and evaluation loops shared by every recipe and table."""
