"""streamfn: AWS Lambda's invocation model on asyncio workers you run yourself."""

from .app import App
from .config import Cors, FunctionConfig, FunctionUrl, MappingConfig
from .context import Context
from .destinations import CallbackDestination, Destination, FileDestination, FunctionDestination
from .errors import (
    ConfigError,
    DestinationError,
    FunctionNotFound,
    InvocationError,
    SourceError,
    SourceUnreachable,
    StoreCorrupted,
    StreamfnError,
    TargetError,
    TooManyRequests,
    UnknownDeadLetter,
)
from .record import Batch, BatchResult, Record
from .source import Source

__all__ = [
    "App",
    "Batch",
    "BatchResult",
    "CallbackDestination",
    "ConfigError",
    "Context",
    "Cors",
    "Destination",
    "DestinationError",
    "FileDestination",
    "FunctionConfig",
    "FunctionDestination",
    "FunctionNotFound",
    "FunctionUrl",
    "InvocationError",
    "MappingConfig",
    "Record",
    "Source",
    "SourceError",
    "SourceUnreachable",
    "StoreCorrupted",
    "StreamfnError",
    "TargetError",
    "TooManyRequests",
    "UnknownDeadLetter",
]

__version__ = "0.1.0"
