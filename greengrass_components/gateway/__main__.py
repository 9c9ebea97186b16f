"""`python -m edgeloop.greengrass_components.gateway`: the Greengrass component's entry point."""

from .component import main

main()
