"""The server-rendered dashboard's shared parts: role checks for pages, the navigation, the overview page.

Pages of a domain live in their app (apps/lablets/views/, apps/workers/views.py); docs/dashboard.md.
"""
