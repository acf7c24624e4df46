"""The ticket service: subscribes to every ``billing.*`` event (configured in INI)."""
