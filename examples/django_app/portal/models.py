"""The portal's own data: each change of billing details a person asked for."""

from __future__ import annotations

from django.db import models


class BillingDetailsChange(models.Model):
    """A change asked for through the portal; its ``billing.changeDetails`` command commits with it."""

    person_id = models.CharField(max_length=100)
    billing_details = models.CharField(max_length=500)
    requested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "portal"

    def __str__(self) -> str:
        return f"billing details of {self.person_id} at {self.requested_at}"
