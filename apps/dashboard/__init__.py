"""The server-rendered dashboard's shared parts: the pages across apps (overview, fleet, reports, audit,
sessions, webhooks), the navigation, /metrics, and the commands fleet_report, seed_demo and setup_schedules.

Pages of a domain live in their app (apps/lablets/views/, apps/workers/views.py); the role check of every
page is apps.api.pages; docs/dashboard.md.
"""
