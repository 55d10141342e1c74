"""ActiveMQ 5.x (Amazon MQ for ActiveMQ): the event source, as Lambda's Amazon MQ event source
mapping reads a queue, over the broker's STOMP connector (extra ``activemq``, which needs no
third-party library: the STOMP 1.2 client is the internal ``stomp`` module, whose docstring says
why).

One module for the source (``source``); the internal ``stomp`` holds the client. The public
names are the ones exported here.
"""

from .source import ActiveMQSource

__all__ = ["ActiveMQSource"]
