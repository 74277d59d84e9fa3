"""The one error a route raises: an HTTP status, a type and a message, answered as `{"error", "error_type"}`."""

from __future__ import annotations


class ServeError(Exception):
    def __init__(self, status: int, error_type: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.error_type, self.headers = status, error_type, headers
