"""The billing service: handles ``billing.changeDetails`` and publishes ``billing.detailsWereChanged``."""
