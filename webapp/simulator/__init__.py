"""A built-in Engage simulator: the default back end, staff training mode, and a test partner.

from . import Engine, SimulatorApp, SimulatorServer
server = SimulatorServer(SimulatorApp(Engine())).start()   # server.url → http://127.0.0.1:PORT
"""

from .app import SimulatorApp
from .engine import DEMO_CONTACTS, DropConnection, Engine, Fault
from .server import SimulatorServer

__all__ = ["DEMO_CONTACTS", "DropConnection", "Engine", "Fault", "SimulatorApp", "SimulatorServer"]


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
    """Start a simulator for `engine` in a background thread; returns the running server."""
    return SimulatorServer(SimulatorApp(engine), host, port).start()
