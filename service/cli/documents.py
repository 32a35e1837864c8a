"""Commands that print the interface documents checked in under docs/."""

from __future__ import annotations

import sys

import click
import orjson

from service.settings import load_settings

__all__ = ["asyncapi"]


@click.command()
def asyncapi() -> None:
    """Print the AsyncAPI 3.0 document of the NATS interface (docs/asyncapi.json)."""
    from service.asyncapi import asyncapi_document

    document = asyncapi_document(load_settings())
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
