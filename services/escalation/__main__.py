from services.escalation.app import build
from shared.runtime import run

run(build)
