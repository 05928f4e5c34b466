"""The forms of the dashboard's lablet pages: `definitions` (the list filter, the editor, the sync from CML)
and `instances` (the list filter, scheduling, extending)."""
