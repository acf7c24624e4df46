"""The portal app: a view that sends ``billing.changeDetails``, a handler that caches billing's answer."""
