from django.urls import path

from apps.api.throttling import login_rate_limited
from apps.identity import views

app_name = "identity"

urlpatterns = [
    # Each start writes a session row: LOGIN_RATE_LIMIT per address, like the local login's POST.
    path("login", login_rate_limited(views.LoginStart.as_view(), methods=("GET",)), name="login"),
    path("callback", views.LoginCallback.as_view(), name="callback"),
    path("logout", views.Logout.as_view(), name="logout"),
    path("me", views.me, name="me"),
]
