"""OpenAI-compatible POST /v1/completions over Generate: streamed as OpenAI's server-sent events, or whole."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.api.http.edge import Call, event
from service.api.http.messages import parse, read_json
from service.api.http.native import servicer_method
from service.api.http.openai_json import Completion, completion, completion_request
from service.api.native import InferenceServicer
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb

FINISH = {pb.FINISH_REASON_LENGTH: "length", pb.FINISH_REASON_STOP: "stop"}
DONE = b"data: [DONE]\n\n"  # how OpenAI ends a stream


class CompletionRoutes:
    def __init__(self, servicer: InferenceServicer) -> None:
        self.generate = servicer_method(servicer, "Generate")
        self.budget_s = servicer.settings.max_request_s

    def routes(self) -> list[Route]:
        return [Route("/v1/completions", self.completions, methods=["POST"], name="Completions")]

    async def completions(self, request: Request) -> Response:
        call = Call("Completions", self.budget_s)
        try:
            c = completion_request(await read_json(request))
            replies = self.generate(parse(c.native, pb.GenerateRequest))
        except Exception as err:
            return call.refuse(err)
        if c.stream:
            return await call.stream(_chunks(c, replies), lambda doc: event(doc), DONE, error_event=None)

        async def whole() -> Response:
            text, logprobs, last = [], [], None
            async for r in replies:
                text.append(r.text)
                logprobs.extend(r.logprobs)
                last = r
            usage = last.finished.usage
            return JSONResponse(completion(c, "".join(text), logprobs, FINISH[last.finished.finish_reason],
                                           counts=(usage.prompt_chars, usage.generated_chars)))
        return await call.unary(whole, watch=request.receive)


async def _chunks(c: Completion, replies: AsyncIterator[pb.GenerateResponse]) -> AsyncIterator[dict]:
    """One completion chunk per Generate message; with include_usage, a last chunk with no choices and the usage."""
    offset = 0
    try:
        async for r in replies:
            done = r.HasField("finished")
            yield completion(c, r.text, list(r.logprobs), FINISH[r.finished.finish_reason] if done else None, offset)
            offset += len(r.text)
            if done and c.include_usage:
                u = r.finished.usage
                yield completion(c, "", None, None, counts=(u.prompt_chars, u.generated_chars), choices=False)
    finally:
        await replies.aclose()  # closed while waiting at a yield: Generate's own cleanup frees the slot now
