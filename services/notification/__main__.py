from services.notification.app import build
from shared.runtime import run

run(build)
