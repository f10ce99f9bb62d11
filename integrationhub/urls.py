from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from feeds.hooks import hook_receive
from orders.health import healthz
from orders.metrics import metrics

admin.site.site_header = "VTEX Integration Hub"
admin.site.site_title = "Integration Hub"
admin.site.index_title = "Operations"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),  # exempt from the HTTPS redirect (SECURE_REDIRECT_EXEMPT)
    path("metrics", metrics, name="metrics"),  # Prometheus, with a bearer token (HUB_METRICS_TOKEN)
    # Any name reaches the view, so an unknown one is counted as a refused hook call, not a bare 404.
    path("hooks/vtex/<str:store_name>/", hook_receive, name="hook_receive"),
    path("api/erp/", include("orders.erp_api")),  # the ERP's invoices, tracking and cancels, with its API key
]
