"""Every error streamfn raises on purpose, in one hierarchy; the HTTP adapter maps the
:class:`InvocationError` branch to Lambda's status codes and ``x-amzn-ErrorType`` in one place.

::

    StreamfnError
    ├── ConfigError (also ValueError)   a setting is invalid: at construction, never later
    ├── TargetError                     ``streamfn run``'s target does not lead to an App
    ├── SourceError                     a source cannot go on (access refused, stream deleted):
    │   │                                   its mapping is disabled, the others go on
    │   └── SourceUnreachable           its broker or service cannot be reached: the mapping
    │                                       retries with a backoff
    ├── DestinationError                a destination refused or failed to store a record
    ├── UnknownDeadLetter               no dead letter has that request id
    └── InvocationError (500)           an invocation refused before the function ran
        ├── FunctionNotFound (404)      ResourceNotFoundException
        ├── TooManyRequests (429)       TooManyRequestsException, with a ``reason``
        ├── InvalidRequestContent (400) InvalidRequestContentException: the body is not JSON
        ├── InvalidParameterValue (400) InvalidParameterValueException
        ├── ValidationError (400)       ValidationException
        ├── RequestTooLarge (413)       RequestEntityTooLargeException
        ├── UnsupportedMediaType (415)  UnsupportedMediaTypeException
        ├── UnknownOperation (404)      UnknownOperationException: no such route
        └── MethodNotAllowed (405)      MethodNotAllowedException, with ``allow``

A handler's own exception is not in this tree: it becomes Lambda's error object
(``errorType``, ``errorMessage``, ``stackTrace``) and the invocation's outcome. Exceptions that
only carry control flow inside one module (a request body cut short, a malformed queue message)
are private to that module.
"""

from __future__ import annotations


class StreamfnError(Exception):
    """Root of every error streamfn raises on purpose."""


class ConfigError(StreamfnError, ValueError):
    """A function, mapping or CLI setting is invalid; raised at construction time."""

    @classmethod
    def out_of_range(cls, field: str, value: object, allowed: str) -> ConfigError:
        return cls(f"{field}={value!r} is invalid: must be {allowed}")


class TargetError(StreamfnError):
    """The ``module:attribute`` given to ``streamfn run`` does not lead to an App."""


class SourceError(StreamfnError):
    """A source failed in a way no retry fixes (access refused, stream or queue deleted,
    authentication failed): as Lambda disables such a mapping, streamfn stops it, keeps the
    reason in its state and runs the other mappings on."""


class SourceUnreachable(SourceError):
    """The source's broker or service did not answer within the connect timeout: the mapping
    reconnects with a backoff (Lambda's ``PROBLEM: Connection error``), since a broker that is
    restarting or not up yet comes back without anyone changing the configuration."""


class DestinationError(StreamfnError):
    """A destination refused or failed to store a record."""


class UnknownDeadLetter(StreamfnError):
    """No dead letter has that request id."""


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


class InvalidParameterValue(InvocationError):
    error_type = "InvalidParameterValueException"
    status = 400


class ValidationError(InvocationError):
    error_type = "ValidationException"
    status = 400


class RequestTooLarge(InvocationError):
    error_type = "RequestEntityTooLargeException"
    status = 413


class UnsupportedMediaType(InvocationError):
    error_type = "UnsupportedMediaTypeException"
    status = 415


class UnknownOperation(InvocationError):
    error_type = "UnknownOperationException"
    status = 404


class MethodNotAllowed(InvocationError):
    error_type = "MethodNotAllowedException"
    status = 405

    def __init__(self, allow: str) -> None:
        super().__init__(f"Method not allowed; use {allow}")
        self.allow = allow
