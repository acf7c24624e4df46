"""Django management commands of the messaging app."""

__all__: list[str] = []
