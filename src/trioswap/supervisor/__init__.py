"""Model servers as child processes, and who may run when (see each module's docstring)."""

from trioswap.supervisor.lease import Lease
from trioswap.supervisor.process import ModelServer
from trioswap.supervisor.router import ModelStatus
from trioswap.supervisor.scheduler import ModelState, UnloadResult
from trioswap.supervisor.supervisor import Supervisor

__all__ = ["Lease", "ModelServer", "ModelState", "ModelStatus", "Supervisor", "UnloadResult"]
