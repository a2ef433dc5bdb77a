from services.intake.app import build
from shared.runtime import run

run(build)
