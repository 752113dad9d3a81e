"""`ModelError`, the one exception of `models`; torch-free, so error handlers can import it cheaply."""


class ModelError(ValueError):
    """A model that cannot be built as asked (unknown name, weights that do not fit, ...)."""
