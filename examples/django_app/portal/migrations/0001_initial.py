"""The portal's table of billing-details changes."""

from __future__ import annotations

from typing import ClassVar

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: ClassVar[list[tuple[str, str]]] = []

    operations: ClassVar[list[migrations.operations.base.Operation]] = [
        migrations.CreateModel(
            name="BillingDetailsChange",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("person_id", models.CharField(max_length=100)),
                ("billing_details", models.CharField(max_length=500)),
                ("requested_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
    ]
