"""Commands that print the interface documents checked in under docs/."""

from __future__ import annotations

import sys

import click
import orjson

from service.settings import load_settings

__all__ = ["asyncapi", "openapi", "settings_doc"]


@click.command()
def asyncapi() -> None:
    """Print the AsyncAPI 3.0 document of the NATS interface (docs/asyncapi.json)."""
    from service.nats.application import asyncapi_document

    document = asyncapi_document(load_settings())
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


@click.command()
def openapi() -> None:
    """Print the OpenAPI document of the HTTP API (docs/openapi.json)."""
    # Built from the routes alone: no database, NATS or settings are read.
    from service.http.openapi import openapi_json

    sys.stdout.buffer.write(openapi_json())


@click.command("settings-doc")
def settings_doc() -> None:
    """Print the reference of every LEDGER_* setting, in Markdown (docs/settings.md)."""
    from service.settings_doc import settings_markdown

    sys.stdout.write(settings_markdown())
