"""Forms of the dashboard's instance pages: the list filter, scheduling (one or a roster) and extending."""

from django import forms

from apps.lablets.models import InstanceStatus

SORTS = {
    "start": "timeslot_start", "-start": "-timeslot_start", "status": "status", "-status": "-status",
    "owner": "owner_id", "-owner": "-owner_id", "created": "created_at", "-created": "-created_at",
}


class InstanceFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "Any live status"), *InstanceStatus.choices], required=False)
    definition = forms.CharField(required=False, label="Definition id")
    owner = forms.CharField(required=False, label="Owner id")
    sort = forms.ChoiceField(choices=[(key, key) for key in SORTS], required=False)

    def selector_filters(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        return {
            "status": [data["status"]] if data.get("status") else None,
            "definition_id": data.get("definition") or None,
            "owner_id": data.get("owner") or None,
        }

    def ordering(self) -> str:
        return SORTS.get(self.cleaned_data.get("sort") if self.is_valid() else "", "-timeslot_start")


class ExtendForm(forms.Form):
    minutes = forms.IntegerField(min_value=1, max_value=24 * 60, initial=30, label="Extend by (minutes)")


MAX_ROSTER = 500


class ScheduleForm(forms.Form):
    """One instance or a whole class: the owner ids pasted (one a line, or comma-separated) or uploaded as
    a CSV file (the first column of each row; a header row `owner_id` is skipped)."""

    definition = forms.ModelChoiceField(queryset=None, to_field_name="public_id", empty_label=None)
    timeslot_start = forms.DateTimeField(required=False, label="Starts (UTC; blank: now)",
                                         widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    duration_minutes = forms.IntegerField(required=False, min_value=1, label="Duration in minutes (blank: the definition's)")
    owners = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 6}), label="Owner ids")
    roster = forms.FileField(required=False, label="…or a roster CSV")

    def __init__(self, *args, definitions, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["definition"].queryset = definitions

    def clean_roster(self):
        upload = self.cleaned_data.get("roster")
        if not upload:
            return []
        try:
            text = upload.read(1_000_000).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise forms.ValidationError("The roster must be a UTF-8 CSV file.") from None
        import csv
        import io

        rows = [row[0].strip() for row in csv.reader(io.StringIO(text)) if row and row[0].strip()]
        return rows[1:] if rows and rows[0].lower() in ("owner_id", "owner") else rows

    def clean(self):
        data = super().clean()
        pasted = [o.strip() for line in (data.get("owners") or "").splitlines() for o in line.split(",") if o.strip()]
        owner_ids = pasted + list(data.get("roster") or [])
        if not owner_ids:
            raise forms.ValidationError("Give at least one owner id, pasted or in a roster file.")
        if len(owner_ids) > MAX_ROSTER:
            raise forms.ValidationError(f"At most {MAX_ROSTER} owners at once.")
        data["owner_ids"] = owner_ids
        return data
