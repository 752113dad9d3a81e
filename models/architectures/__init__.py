"""Built-in architectures; importing this package registers them with `models.registry`."""
