"""Which files the wheel carries; everything else about the project is in pyproject.toml.

The Alembic migrations are kept at the top of the repository (`migrations/`) and reached from
the package through the link `service/migrations`, so the wheel ships them as
`service/migrations/` and the service finds them beside its own code, wherever it is installed.
They are listed here because they are not Python packages (Alembic reads them as scripts),
which `find_packages` would skip.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["service", "service.*"]),
        "service.migrations",
        "service.migrations.versions",
    ],
    package_data={
        "service": ["py.typed"],
        "service.http": ["static/*"],
        "service.migrations": ["script.py.mako"],
    },
)
