"""Operator helpers of the CLI (`mailgw mailbox add`, `identity add`, …)."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.config import Settings


def add_commands(sub: Any) -> None:
    """Register operator subcommands on the top-level parser's subparsers."""


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    raise SystemExit(f"mailgw: unknown command {args.command}")
