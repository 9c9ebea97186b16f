"""Maps the design-layout folders under one import root.

``schemas/`` installs as ``edgeloop.schemas``, ``functions/`` as ``edgeloop.functions`` and so on,
so nothing generic lands bare in site-packages. pyproject.toml holds everything else.
"""

from setuptools import find_packages, setup

LAYOUT_FOLDERS = (
    "schemas",
    "functions",
    "sagemaker_pipelines",
    "greengrass_components",
    "device_shims",
    "cdk",
)


def _packages() -> tuple[list[str], dict[str, str]]:
    packages = ["edgeloop", *(f"edgeloop.{p}" for p in find_packages("edgeloop"))]
    package_dir = {"edgeloop": "edgeloop"}
    for folder in LAYOUT_FOLDERS:
        root = f"edgeloop.{folder}"
        package_dir[root] = folder
        packages += [root, *(f"{root}.{p}" for p in find_packages(folder))]
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()

setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"": ["*.json", "*.yaml", "*.yml", "*.sql", "*.html"]},
    include_package_data=True,
)
