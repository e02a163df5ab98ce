"""``jetbridge keys``: create, list and revoke the API keys of machine clients (`mcp_bridge.api_keys`)."""

from __future__ import annotations

import argparse
import sys

from rich import box
from rich.console import Console
from rich.table import Table

from jetbridge.errors import ConfigurationError
from jetbridge.settings import Settings
from mcp_bridge.api_keys import KeyFile, new_key
from mcp_bridge.auth import OFFERS_READ, SCOPES

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``keys`` sub-commands on ``parser``."""
    sub = parser.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="make an API key for a client and print it (once: only its hash is kept)")
    create.add_argument("--client", required=True, help="the client id the key names")
    create.add_argument("--scopes", default=OFFERS_READ, help=f"space-separated among {' '.join(SCOPES)}")
    sub.add_parser("list", help="the keys: id, client, scopes, created (never the keys themselves)")
    revoke = sub.add_parser("revoke", help="remove a key: the bridge refuses it from its next request")
    revoke.add_argument("key_id", help="the key's id (12 hex digits, as `jetbridge keys list` shows) or the key")


def run(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    """Run ``jetbridge keys <command>``; returns the exit code."""
    keys = KeyFile(settings.api_keys_path)
    if args.keys_command == "create":
        scopes = args.scopes.split()
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ConfigurationError(f"scopes must be among {' '.join(SCOPES)}, not {' '.join(unknown) or '(none)'}")
        key, entry = new_key(args.client, scopes)
        keys.add(entry)
        print(key)
        print(
            f"API key {entry.key_id} for client {entry.client} (scopes {' '.join(entry.scopes)}) stored hashed in "
            f"{keys.path}; the key above is shown once. Call the bridge with 'Authorization: Bearer <key>'.",
            file=sys.stderr,
        )
        return 0
    if args.keys_command == "revoke":
        gone = keys.revoke(args.key_id)
        if gone is None:
            print(f"jetbridge keys: no key {args.key_id!r} in {keys.path}; see `jetbridge keys list`", file=sys.stderr)
            return 1
        console.print(f"revoked key {gone.key_id} of client {gone.client}")
        return 0
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title=str(keys.path))
    for column in ("key id", "client", "scopes", "created"):
        table.add_column(column)
    for entry in keys.read().values():
        table.add_row(entry.key_id, entry.client, " ".join(entry.scopes), entry.created)
    console.print(table if table.row_count else f"no API keys in {keys.path}: `jetbridge keys create --client ID`")
    return 0
