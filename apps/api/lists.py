"""List envelope, pagination, sorting: `{"<resource>": [...], "total", "limit", "offset"}` with
X-Total-Count and Link headers. Query parameters are validated (422 on bad values)."""

from urllib.parse import urlencode

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response

DEFAULT_LIMIT = 50


class ListParamsSerializer(serializers.Serializer):
    limit = serializers.IntegerField(required=False, default=DEFAULT_LIMIT, min_value=1)
    offset = serializers.IntegerField(required=False, default=0, min_value=0)
    sort = serializers.CharField(required=False, default="created_at")
    order = serializers.ChoiceField(choices=["asc", "desc"], required=False, default="desc")
    include_terminated = serializers.BooleanField(required=False, default=False)

    def __init__(self, *args, sort_fields=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.sort_fields = sort_fields

    def validate_limit(self, value):
        if value > settings.API_MAX_PAGE_SIZE:
            raise serializers.ValidationError(f"Ensure this value is less than or equal to {settings.API_MAX_PAGE_SIZE}.")
        return value

    def validate_sort(self, value):
        if value not in self.sort_fields:
            raise serializers.ValidationError(f"Sort by one of: {', '.join(self.sort_fields)}.")
        return value


def list_parameters(sort_fields, *filters: OpenApiParameter) -> list[OpenApiParameter]:
    return [
        OpenApiParameter("limit", OpenApiTypes.INT, description=f"Page size, 1–1000 (default {DEFAULT_LIMIT})."),
        OpenApiParameter("offset", OpenApiTypes.INT, description="Rows to skip (default 0)."),
        OpenApiParameter("sort", OpenApiTypes.STR, enum=list(sort_fields), description="Sort field (default created_at)."),
        OpenApiParameter("order", OpenApiTypes.STR, enum=["asc", "desc"], description="Sort order (default desc)."),
        OpenApiParameter("include_terminated", OpenApiTypes.BOOL, description="Include terminated rows (default false)."),
        *filters,
    ]


def parse_list_params(request, sort_fields) -> dict:
    params = ListParamsSerializer(data=request.query_params, sort_fields=sort_fields)
    params.is_valid(raise_exception=True)
    return params.validated_data


def csv_param(request, name: str, *, choices=None) -> list[str]:
    """`?status=a,b&status=c` → ["a", "b", "c"]; values outside `choices` are a 422."""
    values = []
    for raw in request.query_params.getlist(name):
        values.extend(v.strip() for v in raw.split(",") if v.strip())
    if choices is not None:
        unknown = [v for v in values if v not in choices]
        if unknown:
            raise serializers.ValidationError(
                {name: [f"Unknown value(s) {', '.join(unknown)}; use {', '.join(choices)}."]}
            )
    return values


def envelope_response(request, *, key: str, queryset, serializer_class, params: dict, sort_fields: dict,
                      represent_page=None) -> Response:
    """One page in its envelope. `represent_page(sliced_queryset) -> list` replaces the serializer where a
    list has a faster way to the same output."""
    limit, offset = params["limit"], params["offset"]
    column = sort_fields[params["sort"]]
    prefix = "-" if params["order"] == "desc" else ""
    queryset = queryset.order_by(f"{prefix}{column}", f"{prefix}pk")
    total = queryset.count()
    page = queryset[offset : offset + limit]
    if represent_page is not None:
        data = represent_page(page)
    else:
        data = serializer_class(list(page), many=True, context={"request": request}).data
    response = Response({key: data, "total": total, "limit": limit, "offset": offset})
    response["X-Total-Count"] = str(total)
    links = []
    if offset + limit < total:
        links.append(f'<{_page_url(request, limit, offset + limit)}>; rel="next"')
    if offset > 0:
        links.append(f'<{_page_url(request, limit, max(offset - limit, 0))}>; rel="prev"')
    links.append(f'<{_page_url(request, limit, 0)}>; rel="first"')
    if total:
        links.append(f'<{_page_url(request, limit, ((total - 1) // limit) * limit)}>; rel="last"')
    response["Link"] = ", ".join(links)
    return response


def _page_url(request, limit: int, offset: int) -> str:
    query = request.query_params.copy()
    query["limit"] = str(limit)
    query["offset"] = str(offset)
    return request.build_absolute_uri(request.path) + "?" + urlencode(query, doseq=True)


def envelope_serializer(name: str, key: str, item_serializer) -> type[serializers.Serializer]:
    """A named serializer class describing the list envelope in the OpenAPI schema.

    `many=False`: the list action answers one envelope object, not an array of envelopes."""
    envelope = type(
        name,
        (serializers.Serializer,),
        {
            key: item_serializer(many=True),
            "total": serializers.IntegerField(),
            "limit": serializers.IntegerField(),
            "offset": serializers.IntegerField(),
            "__module__": __name__,
        },
    )
    return extend_schema_serializer(many=False)(envelope)
