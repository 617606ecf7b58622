"""The send command: request models, idempotency, and `handle_send` shared by HTTP and AMQP."""
