"""Database access: the models (one metadata), the engine factory and the dialect-specific statements."""
