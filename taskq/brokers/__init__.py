"""Message brokers. Pick one by URL with `create_broker`."""

from taskq.brokers.base import Broker, BrokerOptions, DeadLetter, Delivery, create_broker

__all__ = ["Broker", "BrokerOptions", "DeadLetter", "Delivery", "create_broker"]
