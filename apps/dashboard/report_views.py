"""The reports page (operators, admins): running hours, booked hours, utilisation and cost per worker per
day for a date range, with a chart, and the same rows as CSV (docs/dashboard.md#reports-operators-admins)."""

from datetime import timedelta

from django import forms
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from apps.dashboard.reports import fleet_report_csv, fleet_report_summary
from apps.api.pages import FLEET_PAGE, page

DEFAULT_DAYS = 14  # today and the 13 days before
MAX_DAYS = 366


class ReportRangeForm(forms.Form):
    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))
    end = forms.DateField(label="To (included)", widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))

    @classmethod
    def from_query(cls, query) -> "ReportRangeForm":
        """Bound to the query string; a date left out or blank is the default (the last 14 days)."""
        today = timezone.localdate()
        data = {"start": (today - timedelta(days=DEFAULT_DAYS - 1)).isoformat(), "end": today.isoformat()}
        data.update({name: query[name] for name in data if query.get(name, "").strip()})
        return cls(data)

    def clean(self):
        start, end = self.cleaned_data.get("start"), self.cleaned_data.get("end")
        if start and end:
            if end < start:
                self.add_error("end", "Must not be before the start date.")
            elif (end - start).days + 1 > MAX_DAYS:
                self.add_error("end", f"The range may cover at most {MAX_DAYS} days.")
        return self.cleaned_data


@require_GET
@page(FLEET_PAGE)
def reports(request):
    form = ReportRangeForm.from_query(request.GET)
    context = {"form": form, "report": None, "time_zone": timezone.get_current_timezone_name()}
    if form.is_valid():
        start, end = form.cleaned_data["start"], form.cleaned_data["end"]
        context["report"] = fleet_report_summary(start=start, end=end)
        context["csv_query"] = urlencode({"start": start.isoformat(), "end": end.isoformat()})
    return render(request, "workers/reports.html", context, status=200 if form.is_valid() else 400)


@require_GET
@page(FLEET_PAGE)
def reports_csv(request):
    form = ReportRangeForm.from_query(request.GET)
    if not form.is_valid():
        errors = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in form.errors.items())
        return HttpResponseBadRequest(errors, content_type="text/plain; charset=utf-8")
    start, end = form.cleaned_data["start"], form.cleaned_data["end"]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="fleet-report-{start}-to-{end}.csv"'
    fleet_report_csv(fleet_report_summary(start=start, end=end)["rows"], response)
    return response
