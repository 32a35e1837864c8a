"""deploy/nats/cluster.conf, the NATS nodes' configuration in deploy/compose.yaml, as the
nats-server the service ships reads it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from service.nats.embedded import find_binary

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "cluster.conf"


def _check(config: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "NATS_SERVER_NAME"}
    return subprocess.run(
        [str(find_binary()), "-t", "-c", str(config)],
        env={**base, **environment},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_nats_server_accepts_the_cluster_config() -> None:
    done = _check(CONFIG, NATS_SERVER_NAME="nats-1")
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_node_must_be_given_its_name() -> None:
    done = _check(CONFIG)
    assert done.returncode != 0
    assert "NATS_SERVER_NAME" in done.stdout + done.stderr


def test_a_mistake_in_the_config_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "cluster.conf"
    broken.write_text(CONFIG.read_text().replace("sync_interval: always", "sync_interval: sometimes"))
    done = _check(broken, NATS_SERVER_NAME="nats-1")
    assert done.returncode != 0
    assert "sync_interval" in done.stdout + done.stderr
