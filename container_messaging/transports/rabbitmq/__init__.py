"""RabbitMQ (``pyamqp://``, ``amqp://`` mapped to it, ``amqps://``), through kombu's py-amqp transport.

The broker routes (durable topic exchange), reports unroutable mandatory messages and confirms publishes
(``confirm_publish``). A delayed retry goes to a durable TTL queue ``<queue>.delay.<ms>`` that dead-letters back to
the service's queue when the time is up; nothing is held unacknowledged meanwhile. A consumer
(:class:`RabbitMqReceiver`) takes py-amqp's deliveries without kombu's Consumer and acknowledges them in groups of at
most :data:`ACK_EVERY`; its connection runs a heartbeat thread so that a long handler does not get the connection
closed by the broker.

The package: ``adapter.py`` (:class:`RabbitMqTransport`: connections, failover, publishing, copies), ``batch.py``
(what the broker said about the messages published together), ``frames.py`` (AMQP frames encoded and read without
py-amqp's per-frame cost), ``receiver.py`` (the consumer) and ``queues.py`` (the queues' names and arguments).

A cluster is reached through a failover list (``url1;url2;url3``): each connection tries the URLs in turn, from the
one that answered last, with TLS options built afresh for each URL. A publish the broker refuses (``basic.nack``, as
a quorum queue without a leader does during a failover) is retried like a lost connection: on a new connection,
after a back-off. Queues are classic, or quorum queues (``queue_type``): see :func:`queue_arguments`.
"""

from container_messaging.transports.rabbitmq.adapter import RabbitMqTransport
from container_messaging.transports.rabbitmq.queues import delay_queue, queue_arguments
from container_messaging.transports.rabbitmq.receiver import ACK_EVERY, DeferredAcks, RabbitMqDelivery, RabbitMqReceiver

__all__ = [
    "ACK_EVERY",
    "DeferredAcks",
    "RabbitMqDelivery",
    "RabbitMqReceiver",
    "RabbitMqTransport",
    "delay_queue",
    "queue_arguments",
]
