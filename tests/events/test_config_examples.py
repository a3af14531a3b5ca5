"""config/herald.toml's commented ``[hooks.NAME]`` examples: one per transport, each valid
once uncommented."""

from __future__ import annotations

from pathlib import Path

from engine.config import load_config
from engine.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[2]


def commented_hooks(text: str) -> dict[str, str]:
    """The ``# [hooks.NAME]`` examples of a config, uncommented."""
    examples: dict[str, str] = {}
    name: str | None = None
    for line in text.splitlines():
        if line.startswith("# [hooks."):
            name = line[len("# [hooks."):].rstrip("]")
            examples[name] = line[2:] + "\n"
        elif name is not None and line.startswith("# "):
            examples[name] += line[2:] + "\n"
        else:
            name = None
    return examples


def test_each_transport_has_an_example_that_loads(tmp_path: Path) -> None:
    text = (ROOT / "config" / "herald.toml").read_text(encoding="utf-8")
    examples = commented_hooks(text)
    transports = {e.split('transport = "')[1].split('"')[0] for e in examples.values()}
    assert transports == {"http", "rabbitmq", "nats"}
    path = tmp_path / "herald.toml"
    path.write_text(text + "\n" + "\n".join(examples.values()), encoding="utf-8")
    config = load_config(path, drivers=load_plugins().drivers)
    assert set(config.hooks) == set(examples)
    queue = config.hooks["queue"]
    assert (queue.exchange, queue.routing_key) == ("herald", "herald.{event_type}")
    assert config.hooks["stream"].subject == "herald.events.{event_type}"
    assert config.hooks["crm"].secret == "a-long-random-secret"
