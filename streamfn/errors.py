"""One small exception hierarchy; the HTTP adapter maps it to Lambda's error codes in one place."""

from __future__ import annotations


class StreamfnError(Exception):
    """Root of every error streamfn raises on purpose."""


class ConfigError(StreamfnError, ValueError):
    """A function, mapping or CLI setting is invalid; raised at construction time."""

    @classmethod
    def out_of_range(cls, field: str, value: object, allowed: str) -> ConfigError:
        return cls(f"{field}={value!r} is invalid: must be {allowed}")


class SourceError(StreamfnError):
    """A source failed in a way the engine cannot retry past (dead broker, missing stream)."""


class DestinationError(StreamfnError):
    """A destination refused or failed to store a record."""


class InvocationError(StreamfnError):
    """A request for an invocation was refused before the function ran."""

    error_type = "ServiceException"
    status = 500


class FunctionNotFound(InvocationError):
    error_type = "ResourceNotFoundException"
    status = 404


class TooManyRequests(InvocationError):
    error_type = "TooManyRequestsException"
    status = 429

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidRequestContent(InvocationError):
    error_type = "InvalidRequestContentException"
    status = 400


class RequestTooLarge(InvocationError):
    error_type = "RequestEntityTooLargeException"
    status = 413
