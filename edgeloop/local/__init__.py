"""The embedded local runtime: moto_server plays AWS, mosquitto plays IoT Core, the bridge plays IoT rules.

It is what runs when no AWS account is configured (`make demo`, the integration tests).
"""

from edgeloop.local import delivery as _delivery  # noqa: F401  registers EDGELOOP_DELIVERY=local
