"""Shared fixtures: users per role, API clients authenticated with real API keys."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from labmanager.services import api_key_create, user_ensure_with_role


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Every role user gets a password; the default PBKDF2 costs ~0.3 s a user on this machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache():
    # Rate-limit counters live in the cache (Redis on the CI's second run): start each test clean.
    cache.clear()
    yield


def _user(username, role):
    user, _ = user_ensure_with_role(username=username, role=role, actor="tests", password="pw-" + username)
    return user


@pytest.fixture
def admin_user(db):
    return _user("admin1", "admin")


@pytest.fixture
def operator_user(db):
    return _user("operator1", "operator")


@pytest.fixture
def instructor_user(db):
    return _user("instructor1", "instructor")


@pytest.fixture
def other_instructor(db):
    return _user("instructor2", "instructor")


def client_for(user) -> APIClient:
    """An APIClient that sends a real API key of `user` in X-API-Key."""
    _, raw = api_key_create(user=user, actor="tests")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    client.raw_key = raw
    return client


@pytest.fixture
def admin_client(admin_user):
    return client_for(admin_user)


@pytest.fixture
def operator_client(operator_user):
    return client_for(operator_user)


@pytest.fixture
def instructor_client(instructor_user):
    return client_for(instructor_user)


@pytest.fixture
def other_instructor_client(other_instructor):
    return client_for(other_instructor)


@pytest.fixture
def anon_client():
    return APIClient()
