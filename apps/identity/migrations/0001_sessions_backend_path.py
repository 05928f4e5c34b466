"""Browser sessions of users signed in through OIDC name the backend that signed them in by its dotted path,
which issue 18 moved (labmanager.identity.oidc → apps.identity.oidc): Django drops a session whose backend is
no longer in AUTHENTICATION_BACKENDS, so the stored path is rewritten and nobody is signed out by the move."""

from django.contrib.sessions.backends.db import SessionStore
from django.db import migrations

KEY = "_auth_user_backend"
MOVED = {"labmanager.identity.oidc.OidcBackend": "apps.identity.oidc.OidcBackend"}


def _rewrite(apps, moves: dict) -> None:
    Session = apps.get_model("sessions", "Session")
    store = SessionStore()
    for session in Session.objects.filter(session_data__isnull=False).iterator():
        data = store.decode(session.session_data)
        if data.get(KEY) in moves:
            data[KEY] = moves[data[KEY]]
            Session.objects.filter(pk=session.pk).update(session_data=store.encode(data))


def forward(apps, schema_editor):
    _rewrite(apps, MOVED)


def backward(apps, schema_editor):
    _rewrite(apps, {new: old for old, new in MOVED.items()})


class Migration(migrations.Migration):

    dependencies = [("sessions", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
