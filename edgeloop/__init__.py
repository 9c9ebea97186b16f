"""edgeloop: closes the machine-learning loop between factory gateways and AWS."""

from edgeloop.schemas.version import PACKAGE_VERSION as __version__  # the one version source

__all__ = ["__version__"]
