from django.urls import path

from . import views

urlpatterns = [
    path("<str:job_id>", views.job_detail, name="job-detail"),
]
