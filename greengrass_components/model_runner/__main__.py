"""`python -m edgeloop.greengrass_components.model_runner`: the Greengrass component's entry point."""

from .component import main

main()
