"""Training of victim models (OpenNMT-py LSTMs, HuggingFace transformers)."""
