from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from apps.events.stream import event_stream
from apps.api import views as api_views
from apps.api.throttling import login_rate_limited
from apps.identity import views as identity_views
from apps.dashboard.metrics import metrics_view
from apps.lablets.views import student

# Django tries these in order on every request: the remote-lab API, polled and heartbeated by every
# client of the queue, comes first (behind the routers' patterns every heartbeat would try them all).
api_patterns = [
    path("remote-lab/", include("apps.sessions.api.urls")),
    path("", include("apps.workers.api.urls")),
    path("", include("apps.lablets.api.urls")),
    path("", include("apps.audit.api.urls")),
    path("", include("apps.webhooks.api.urls")),
    path("events/stream", event_stream, name="events-stream"),
    path("auth/", include("apps.identity.keys")),  # /api/auth/api-keys...
    path("diagnostics/health", api_views.health, name="health"),
    path("diagnostics/ready", api_views.ready, name="ready"),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="schema"),
    # The split view serves its init script from /api/docs?script: no inline script (the production CSP).
    path("docs", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]

urlpatterns = [
    path("api/auth/", include("apps.identity.urls")),  # OIDC login/callback/logout, me
    path("api/", include(api_patterns)),
    # The admin's own password form: the same LOGIN_RATE_LIMIT per address as /accounts/login/ (before the
    # admin's URLs, so this pattern answers /admin/login/; reverse("admin:login") still names the same path).
    path("admin/login/", login_rate_limited(admin.site.login)),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("accounts/login/", login_rate_limited(identity_views.LoginPage.as_view()), name="login"),  # LOGIN_RATE_LIMIT
    path("accounts/no-access/", identity_views.no_access, name="identity-no-access"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # A student's own link (no login): the token opens its instance and nothing else (apps.lablets.views.student).
    path("s/<str:token>", student.student_page, name="student-page"),
    path("s/<str:token>/instances/<str:public_id>", student.student_instance, name="student-instance"),
    path("s/<str:token>/extend", student.student_extend, name="student-extend"),
    path("dashboard/", include("apps.dashboard.urls")),  # the web dashboard (docs/dashboard.md)
    path("dashboard/", include("apps.lablets.urls")),
    path("dashboard/", include("apps.workers.urls")),
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
]
