"""Pagination convention for every list endpoint: cursor-based, newest first.

`?page_size=` (1..200) and an opaque `?cursor=`; responses carry `next`, `previous` and
`results`. Cursors stay stable while rows are inserted, which offset pages do not. A cursor
that is not one of ours is a 400 `invalid_cursor` (DRF answers 404, as if the list were gone).
"""

from typing import Any

from rest_framework import pagination
from rest_framework.exceptions import NotFound
from rest_framework.request import Request

from apps.core.errors import ValidationFailed


class CursorPagination(pagination.CursorPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = "-created_at"

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationFailed(
                "The cursor is not valid: use the `next` or `previous` link of a page.",
                code="invalid_cursor",
            ) from None
