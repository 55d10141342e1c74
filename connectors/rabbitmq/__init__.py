"""RabbitMQ: the event source (Lambda's Amazon MQ for RabbitMQ poller), on aiormq (extra
``rabbitmq``).

``source`` is the consumer and its acknowledgements, ``event`` Lambda's ``aws:rmq`` event,
``access`` the credentials, virtual host and TLS (AWS's BASIC_AUTH and VIRTUAL_HOST), and
``acks`` which delivery tags one frame can settle. The public names are the ones exported here.
"""

from .._extras import require

require("rabbitmq", "rabbitmq", "aiormq")

from .access import RabbitMQAccess, Secret  # noqa: E402
from .source import RabbitMQSource  # noqa: E402

__all__ = ["RabbitMQAccess", "RabbitMQSource", "Secret"]
