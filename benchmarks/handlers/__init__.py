"""Handler modules the framework's workers scan (one module per scenario, so each consumer binds only its keys)."""
