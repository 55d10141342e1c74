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
    ├── StoreCorrupted                  a state directory's event queue file is damaged,
    │                                       emptied or replaced: refused, with the salvage command
    └── InvocationError (500)           an invocation refused before the function ran
        ├── FunctionNotFound (404)      ResourceNotFoundException
        ├── TooManyRequests (429)       TooManyRequestsException, with a ``reason``
        ├── InvalidRequestContent (400) InvalidRequestContentException: the body is not JSON
        ├── InvalidParameterValue (400) InvalidParameterValueException
        ├── ValidationError (400)       ValidationException
        ├── RequestTooLarge (413)       RequestEntityTooLargeException
        ├── UnsupportedMediaType (415)  UnsupportedMediaTypeException
        ├── UnknownOperation (404)      UnknownOperationException: no such route
        ├── MethodNotAllowed (405)      MethodNotAllowedException, with ``allow``
        ├── NotAuthenticated (403)      the request's SigV4 signature is absent or does not hold
        │   ├── MissingAuthenticationToken  MissingAuthenticationTokenException: not signed
        │   ├── IncompleteSignature     IncompleteSignatureException: a part of SigV4 missing
        │   ├── UnrecognizedClient      UnrecognizedClientException: no such access key
        │   └── InvalidSignature        InvalidSignatureException: wrong signature, scope or date
        └── AccessDenied (403)          AccessDeniedException: the key is not granted the call

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


class StoreCorrupted(StreamfnError):
    """The event queue file of a state directory is damaged (not a database, malformed pages, a
    broken write-ahead log), or was emptied or replaced while a marker says it held a queue.
    Running on would drop the events it held without a word, so the worker and ``streamfn dlq``
    refuse it; the message names the file and ``streamfn queue salvage``, which copies what is
    readable into a new queue and keeps the damaged file aside."""

    def __init__(self, message: str, path: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        #: What is wrong, without the advice: for the salvage report.
        self.problem = problem or message


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

    def __init__(self, message: str, reason: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        #: Whole seconds after which a retry may succeed, sent as ``Retry-After`` when set (a
        #: full event queue); None for a throttle, whose end nobody can predict.
        self.retry_after = retry_after


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


class NotAuthenticated(InvocationError):
    """The request does not prove which access key sent it. AWS answers every such request
    with a 403 before looking at what it asks for."""

    error_type = "UnrecognizedClientException"
    status = 403


class MissingAuthenticationToken(NotAuthenticated):
    error_type = "MissingAuthenticationTokenException"

    def __init__(self, message: str = "Missing Authentication Token") -> None:
        super().__init__(message)


class IncompleteSignature(NotAuthenticated):
    error_type = "IncompleteSignatureException"


class UnrecognizedClient(NotAuthenticated):
    error_type = "UnrecognizedClientException"

    def __init__(
        self, message: str = "The security token included in the request is invalid."
    ) -> None:
        super().__init__(message)


class InvalidSignature(NotAuthenticated):
    error_type = "InvalidSignatureException"


class AccessDenied(InvocationError):
    """The request is signed by a known key that is not granted what it asks for."""

    error_type = "AccessDeniedException"
    status = 403
