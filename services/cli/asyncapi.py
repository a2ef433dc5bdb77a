"""AsyncAPI documents of every service, generated from the code (FastStream's generator),
with each message's payload given as its typed CloudEvents envelope."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import yaml
from faststream.rabbit import RabbitExchange
from pydantic import BaseModel, create_model

from services.catalogue import PUBLISHES, SERVICES, builder
from shared.envelope import Envelope
from shared.events import EVENT_TYPES, Event
from shared.settings import Settings
from shared.submissions import SUBMISSION_ADAPTER, BulkSubmissionV1

DOCS = Path(__file__).resolve().parents[2] / "docs" / "asyncapi"
# Documents describe the default deployment, whatever this machine's settings are.
DOC_SETTINGS = Settings(amqp_url="amqp://rabbitmq:5672/", namespace="carewatch")


def typed_envelope(cls: type[Event]) -> type[BaseModel]:
    """``Envelope`` whose ``type`` is this event's and whose ``data`` is the event."""
    return create_model(f"{cls.__name__}Envelope", __base__=Envelope,
                        type=(Literal[cls.event_type], ...),  # type: ignore[valid-type]
                        data=(cls, ...))


def document(service: str) -> dict[str, Any]:
    runtime = builder(service)(DOC_SETTINGS)
    events = RabbitExchange(runtime.topology.events_exchange, declare=False)
    for cls in PUBLISHES[service]:
        runtime.broker.publisher(
            exchange=events, routing_key=cls.event_type, schema=typed_envelope(cls),
            title=f"{service}:publishes:{cls.event_type}",
            description=inspect.cleandoc(cls.__doc__ or cls.event_type),
            include_in_schema=True)
    spec: dict[str, Any] = runtime.app.schema.to_specification().to_jsonable()
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("EmptyPayload", None)
    for name, message in spec["components"].get("messages", {}).items():
        # A lane's queue is titled <service>:<type>.urgent.
        event_type = name.split(":")[1].removesuffix(".urgent") if name.count(":") >= 2 else ""
        if name == "intake:submission:SubscribeMessage":
            full = SUBMISSION_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(full.pop("$defs", {}))
            schemas["Submission"] = full
            bulk = BulkSubmissionV1.model_json_schema(
                ref_template="#/components/schemas/{model}")
            schemas.update(bulk.pop("$defs", {}))
            schemas["BulkSubmission"] = bulk
            # The routine lane takes bulk messages too (routing key submission.bulk.v1).
            message["payload"] = {"oneOf": [{"$ref": "#/components/schemas/Submission"},
                                            {"$ref": "#/components/schemas/BulkSubmission"}]}
        elif name.endswith(":SubscribeMessage") and event_type in EVENT_TYPES:
            model = typed_envelope(EVENT_TYPES[event_type])
            message["payload"] = {"$ref": f"#/components/schemas/{model.__name__}"}
            full = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(full.pop("$defs", {}))
            schemas[model.__name__] = full
    return spec


def render(service: str) -> str:
    return yaml.safe_dump(document(service), sort_keys=True, allow_unicode=True, width=100)


def write_all(directory: Path = DOCS) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for service in SERVICES:
        path = directory / f"{service}.yaml"
        path.write_text(render(service))
        written.append(path)
    return written
