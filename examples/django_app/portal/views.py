"""POST records the change and sends ``billing.changeDetails`` to the billing service in one transaction; GET shows
what billing's event said."""

from __future__ import annotations

import json

from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from container_messaging import DistributedBus
from container_messaging.integrations.django import get_container
from examples.django_app.portal.handlers import cache_key
from examples.django_app.portal.models import BillingDetailsChange
from examples.messages import ChangeBillingDetails


@csrf_exempt  # a JSON API for programs, not a browser form: a real project authenticates it instead
@require_http_methods(["GET", "POST"])
def billing_details(request: HttpRequest, person_id: str) -> JsonResponse:
    if request.method == "GET":
        details = cache.get(cache_key(person_id))
        if details is None:
            return JsonResponse({"error": f"no billing details known for person {person_id!r} yet"}, status=404)
        return JsonResponse({"personId": person_id, "billingDetails": details})
    try:
        details = json.loads(request.body)["billingDetails"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": 'expected a JSON body {"billingDetails": "..."}'}, status=400)
    if not isinstance(details, str) or not details:
        return JsonResponse({"error": "billingDetails must be a non-empty string"}, status=400)
    bus = get_container().get(DistributedBus)
    with transaction.atomic():  # with the outbox on, the command commits (or rolls back) with the change
        change = BillingDetailsChange.objects.create(person_id=person_id, billing_details=details)
        bus.convert_and_send_command("billing", "billing.changeDetails", ChangeBillingDetails(person_id, details))
    return JsonResponse({"sent": "billing.changeDetails", "to": "billing", "change": change.pk}, status=202)
