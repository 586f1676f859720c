"""Building blocks the model files compose."""
