"""manage.py messaging (see messaging.py)."""

__all__: list[str] = []
