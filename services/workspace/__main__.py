from services.workspace.app import build
from shared.runtime import run

run(build)
