"""The inbox: conversation views and the reply, forward and scheduling services (HTTP and AMQP)."""
