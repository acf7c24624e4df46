from __future__ import annotations

from django.urls import path

from examples.django_app.portal import views

urlpatterns = [
    path("people/<str:person_id>/billing-details", views.billing_details, name="billing-details"),
]
