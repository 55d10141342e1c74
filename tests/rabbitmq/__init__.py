"""RabbitMQSource tests against the machine's RabbitMQ (127.0.0.1:5672, guest/guest)."""
