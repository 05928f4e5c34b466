"""Database backends of LabManager (settings.DATABASES' ENGINE)."""
