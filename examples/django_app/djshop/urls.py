"""URLs of the example project."""

from django.urls import path

from djshop import views

urlpatterns = [
    path("runs/", views.start_run, name="start-run"),
    path("runs/<str:run_id>/", views.run_status, name="run-status"),
]
