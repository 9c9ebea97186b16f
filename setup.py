"""One import root, `edgeloop`, over the design-layout folders.

`edgeloop/` holds a symlink per layout folder (`edgeloop/schemas -> ../schemas`, ...), so
`edgeloop.schemas` is `schemas/` for Python, for a reader following an import and for static
tools alike. Package discovery follows the links; a wheel copies the files they point to.
pyproject.toml holds everything else.
"""

from setuptools import find_packages, setup

DATA_SUFFIXES = ("json", "yaml", "yml", "sql", "html")
PACKAGES = ["edgeloop", *(f"edgeloop.{p}" for p in find_packages("edgeloop"))]

setup(
    packages=PACKAGES,
    package_dir={"edgeloop": "edgeloop"},
    # data files beside a package and one folder below it (recipes/, sql/, json/, definitions/)
    package_data={"": [f"{folder}*.{suffix}" for folder in ("", "*/") for suffix in DATA_SUFFIXES]},
    include_package_data=True,
)
