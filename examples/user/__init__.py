"""The user service: sends ``billing.changeDetails`` and reacts to ``billing.detailsWereChanged``."""
