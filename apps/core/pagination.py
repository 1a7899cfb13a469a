"""Pagination convention for every list endpoint: cursor-based, newest first.

`?page_size=` (1..200) and an opaque `?cursor=`; responses carry `next`, `previous` and
`results`. Cursors stay stable while rows are inserted, which offset pages do not.
"""

from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = "-created_at"
