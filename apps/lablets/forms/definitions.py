"""Forms of the dashboard's lablet definition pages: the list filter, the definition editor (create, edit,
new version) and the sync from CML. The services validate again (the YAML, name+version uniqueness);
their `DomainError.errors` are put back on the form's fields (`add_domain_error`)."""

import re

from django import forms

from apps.lablets.models import LabletDefinition
from apps.lablets.services.definitions import LIFECYCLE_FIELDS, REQUIREMENT_FIELDS
from apps.workers.models import Worker
from apps.core.errors import Conflict, DomainError

LINE = re.compile(r"\bline (\d+)\b")


def yaml_error_line(messages) -> int | None:
    """The line the topology's first error points at ("Invalid YAML at line 3, column 9: ..."): the editor
    jumps there."""
    for message in messages:
        found = LINE.search(str(message))
        if found:
            return int(found.group(1))
    return None


class DefinitionFilterForm(forms.Form):
    name = forms.CharField(required=False, max_length=100, label="Name contains")
    deprecated = forms.BooleanField(required=False, label="Show deprecated")

    def apply(self, queryset):
        data = self.cleaned_data if self.is_valid() else {}
        if data.get("name"):
            queryset = queryset.filter(name__icontains=data["name"])
        if not data.get("deprecated"):
            queryset = queryset.filter(is_active=True)
        return queryset


def _count(label: str, **kwargs) -> forms.IntegerField:
    return forms.IntegerField(min_value=1, label=label, **kwargs)


class DefinitionForm(forms.Form):
    name = forms.CharField(max_length=100)
    version = forms.CharField(max_length=40)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    cml_lab_yaml = forms.CharField(
        strip=False, label="Topology (CML lab YAML)",
        widget=forms.Textarea(attrs={"rows": 22, "class": "yaml-editor", "spellcheck": "false",
                                     "autocapitalize": "off", "autocomplete": "off", "wrap": "off",
                                     "aria-describedby": "yaml-help yaml-errors"}),
    )
    cpu_cores = _count("CPU cores")
    memory_gb = _count("Memory (GB)")
    storage_gb = _count("Storage (GB)")
    node_count = _count("Nodes")
    default_duration_minutes = _count("Default duration (minutes)", initial=120)
    max_duration_minutes = _count("Maximum duration (minutes)", initial=240)
    idle_timeout_minutes = _count("Idle timeout (minutes)", initial=30)
    warm_pool_depth = forms.IntegerField(
        min_value=0, max_value=100, initial=0, required=False, label="Warm pool depth",
        help_text="Labs kept booted ahead: an instance starting now takes one and runs within seconds. 0: none.")
    keep_lab_until_slot_end = forms.BooleanField(
        required=False, label="Keep the lab until the slot ends",
        help_text="Even once an instance is graded. Unticked: a graded instance is torn down at once (its archive "
                  "kept) and its capacity freed.")

    GROUPS = {"Definition": ("name", "version", "description"), "Resource requirements": REQUIREMENT_FIELDS,
              "Lifecycle": LIFECYCLE_FIELDS, "Warm pool": ("warm_pool_depth",)}
    # The keys of a service's ValidationFailed.errors → the field that shows them.
    # The page edits the topology, not the port definitions: a device they name missing from it is the topology's.
    ERROR_FIELDS = {"cml_lab_yaml": "cml_lab_yaml", "lifecycle.max_duration_minutes": "max_duration_minutes",
                    "name": "name", "version": "version", "port_definitions": "cml_lab_yaml"}

    @staticmethod
    def initial_from(definition: LabletDefinition, *, version: str | None = None) -> dict:
        fields = (("name", "version", "description", "cml_lab_yaml") + REQUIREMENT_FIELDS + LIFECYCLE_FIELDS
                  + ("warm_pool_depth",))
        initial = {field: getattr(definition, field) for field in fields}
        if version is not None:
            initial["version"] = version
        return initial

    def clean_cml_lab_yaml(self) -> str:
        # Browsers send a textarea's lines ending in CRLF; the topology is stored (and hashed) with LF.
        return self.cleaned_data["cml_lab_yaml"].replace("\r\n", "\n")

    def grouped(self):
        """(legend, bound fields) for each fieldset of the page, the topology left out (it has its own)."""
        return [(legend, [self[name] for name in names]) for legend, names in self.GROUPS.items()]

    def service_data(self) -> dict:
        """The cleaned data in the services' (and the API's) shape."""
        data = self.cleaned_data
        return {
            "name": data["name"], "version": data["version"], "description": data["description"],
            "cml_lab_yaml": data["cml_lab_yaml"],
            "resource_requirements": {key: data[key] for key in REQUIREMENT_FIELDS},
            "lifecycle": {key: data[key] for key in LIFECYCLE_FIELDS},
            **({} if data.get("warm_pool_depth") is None else {"warm_pool_depth": data["warm_pool_depth"]}),
        }

    def add_domain_error(self, exc: DomainError) -> None:
        """A refusal of the service, next to the field it is about (the page-level message otherwise); a
        duplicate name+version goes with the version."""
        if isinstance(exc, Conflict) and not exc.errors:
            self.add_error("version", exc.detail)
            return
        placed = False
        for key, messages in exc.errors.items():
            field = self.ERROR_FIELDS.get(key)
            if field:
                self.add_error(field, list(messages) if isinstance(messages, (list, tuple)) else [str(messages)])
                placed = True
        if not placed:
            self.add_error(None, exc.detail)

class SyncForm(forms.Form):
    """Blank fields: the definition's reference lab (the last one synced from)."""

    lab_id = forms.CharField(required=False, max_length=64, label="CML lab id")
    worker = forms.ModelChoiceField(queryset=Worker.objects.none(), required=False, to_field_name="public_id",
                                    empty_label="the reference lab's worker", label="On worker")

    ERROR_FIELDS = {"lab_id": "lab_id", "worker_id": "worker"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["worker"].queryset = Worker.objects.exclude(status="terminated").order_by("name")

    def service_kwargs(self) -> dict:
        worker = self.cleaned_data.get("worker")
        return {"lab_id": self.cleaned_data.get("lab_id", ""), "worker_id": worker.public_id if worker else ""}

    def add_domain_error(self, exc: DomainError) -> None:
        placed = False
        for key, messages in exc.errors.items():
            if key in self.ERROR_FIELDS:
                self.add_error(self.ERROR_FIELDS[key], list(messages))
                placed = True
        if not placed:
            self.add_error(None, exc.detail)
