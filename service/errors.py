"""Domain exceptions, each named after the gRPC status code the edge (service/api/edge.py) answers it with."""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):  # noqa: N818 (named after its status code)
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field


class NotFound(ServiceError):  # noqa: N818 (named after its status code)
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(ServiceError):  # noqa: N818 (named after its status code)
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):  # noqa: N818 (named after its status code)
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):  # noqa: N818 (named after its status code)
    code = grpc.StatusCode.UNAVAILABLE


class OverBudget(ServiceError):  # noqa: N818 (the server's own deadline)
    code = grpc.StatusCode.DEADLINE_EXCEEDED

    def __init__(self, budget_s: float) -> None:
        super().__init__(f"the server's time budget for a request ran out: max_request_s = {budget_s:g} s")


# The same outcomes over HTTP (service/api/http): the gRPC code of each error above, and of the edge's own
# outcomes, as an HTTP status. FAILED_PRECONDITION (a model of the wrong kind for the route) is 409: the
# request conflicts with what the model is. CANCELLED (the client went away) is nginx's 499, for counting only.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
