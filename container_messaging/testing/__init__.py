"""Testing support: several services in one process on in-memory channels, driven by the test, with recorded
messages and a test clock (:class:`TestSystem`); a pytest plugin (:mod:`.plugin`, opt-in fixtures).

See the README, "Testing your services".
"""

from container_messaging.testing.clock import TestClock
from container_messaging.testing.errors import MessageFailedError, TestSystemError
from container_messaging.testing.recorded import Outcome, RecordedMessage, RecordedMessages
from container_messaging.testing.system import ConfigSource, ServiceUnderTest, SystemRun, TestSystem

__all__ = [
    "ConfigSource",
    "MessageFailedError",
    "Outcome",
    "RecordedMessage",
    "RecordedMessages",
    "ServiceUnderTest",
    "SystemRun",
    "TestClock",
    "TestSystem",
    "TestSystemError",
]
