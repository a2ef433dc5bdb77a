from services.quality_monitor.app import build
from shared.runtime import run

run(build)
