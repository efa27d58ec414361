"""The systemd unit runs the real command with a SIGTERM stop, as the watcher expects."""

from __future__ import annotations

import configparser
import shlex

from aes_index.cli import build_parser
from conftest import REPO_ROOT


def test_systemd_unit_starts_the_watcher_and_stops_it_with_sigterm():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(REPO_ROOT / "packaging" / "systemd" / "aes-index.service")
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[:2] == ["/usr/bin/env", "aes-index"]
    args = build_parser().parse_args([a if not a.startswith("${") else "/library" for a in command[2:]])
    assert args.command == "watch" and args.roots == ["/library"]
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) >= 60
    assert unit["Install"]["WantedBy"] == "default.target"  # a user unit
