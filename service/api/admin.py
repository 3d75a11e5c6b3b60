"""The rnnserve.v1.Admin servicer: operating a running server (reloading its model repository)."""

from __future__ import annotations

from service.api.edge import rpc
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from service.models.host import ModelHost
from service.models.reload import Key, Reloader


def _refs(keys: list[Key]) -> list[pb.ModelRef]:
    return [pb.ModelRef(name=name, version=version) for name, version in keys]


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(self, host: ModelHost, reloader: Reloader) -> None:
        self.host, self.settings, self.reloader = host, host.settings, reloader

    @rpc
    async def ReloadModels(self, request: pb.ReloadModelsRequest, context) -> pb.ReloadModelsResponse:  # noqa: N802
        self.host.check_open()
        report = await self.reloader.reload()
        return pb.ReloadModelsResponse(
            loaded=_refs(report.loaded), unloaded=_refs(report.unloaded), serving=_refs(report.serving),
            failed=[pb.LoadFailure(path=path, reason=reason) for path, reason in sorted(report.failed.items())])
