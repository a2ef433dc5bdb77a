"""notification's configuration: the routing file, YAML not code (``routing.yaml`` beside this
file, or the file named by ``CAREWATCH_NOTIFICATION_ROUTING_FILE``), read and validated into
routing.py's ``RoutingConfig``, with the webhooks' secrets from the settings."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.notification.routing import RoutingConfig
from shared.settings import Settings

DEFAULT_ROUTING = Path(__file__).parent / "routing.yaml"


def load_routing(path: str | Path | None = None, settings: Settings | None = None
                 ) -> RoutingConfig:
    """Read and validate the routing configuration; webhook secrets from the settings
    (``CAREWATCH_NOTIFICATION_WEBHOOK_SECRETS``) take precedence over the file."""
    source = Path(path) if path else DEFAULT_ROUTING
    try:
        data = yaml.safe_load(source.read_text())
    except FileNotFoundError as exc:
        raise ValueError(f"notification routing file not found: {source}") from exc
    config = RoutingConfig.model_validate(data)
    secrets = settings.notification_webhook_secrets if settings else {}
    webhooks = {name: hook.model_copy(update={"secret": secrets.get(name, hook.secret)})
                for name, hook in config.webhooks.items()}
    unsigned = sorted(name for name, hook in webhooks.items() if not hook.secret)
    if unsigned:
        raise ValueError(f"webhooks {unsigned} have no secret: set one in {source} or in"
                         " CAREWATCH_NOTIFICATION_WEBHOOK_SECRETS (JSON, name -> secret)")
    return config.model_copy(update={"webhooks": webhooks})
