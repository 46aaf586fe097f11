from django.urls import path

from . import views

urlpatterns = [
    path("webhook-secret", views.webhook_secret, name="webhook-secret"),
    path("<str:job_id>", views.job_detail, name="job-detail"),
]
