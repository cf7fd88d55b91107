"""Stand-ins the decision-log tests pass through the same constructors the agent uses."""

from __future__ import annotations

from xml.etree import ElementTree as ET


class Repository:
    """Stands in for the syslog sender (``audit.syslog.SpooledSender``): what the decision log hands over."""

    def __init__(self) -> None:
        self.messages: list[ET.Element] = []

    def submit(self, message: bytes) -> None:
        self.messages.append(ET.fromstring(message))

    def close(self, timeout: float = 0) -> None:
        pass
