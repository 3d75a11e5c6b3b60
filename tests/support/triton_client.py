"""The official tritonclient, unmodified, against a running rnnserve: `python triton_client.py PORT CASES_JSON`.

Runs in its own process: tritonclient registers its own copy of the `inference` protos in protobuf's
default pool, which would clash with rnnserve's in one process. Prints one JSON object of results.
"""

from __future__ import annotations

import json
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def texts_input(name: str, texts: list[str]) -> grpcclient.InferInput:
    t = grpcclient.InferInput(name, [len(texts)], "BYTES")
    t.set_data_from_numpy(np.array([s.encode() for s in texts], dtype=np.object_))
    return t


def error(call) -> dict:
    try:
        call()
    except InferenceServerException as e:
        return {"status": e.status(), "message": e.message()}
    return {"status": "no error"}


def param(response, key: str):
    p = response.parameters.get(key)
    return None if p is None else getattr(p, p.WhichOneof("parameter_choice"))


def main(port: int, cases: dict) -> dict:
    client = grpcclient.InferenceServerClient(url=f"localhost:{port}")
    out: dict = {
        "live": client.is_server_live(), "ready": client.is_server_ready(),
        "server": client.get_server_metadata(as_json=True),
        "model_ready": {m: client.is_model_ready(m) for m in [*cases["models"], "no-such-model"]},
        "metadata": {m: client.get_model_metadata(m, as_json=True) for m in cases["models"]},
        "config": {m: client.get_model_config(m, as_json=True) for m in cases["models"]},
    }

    c = cases["classify"]
    r = client.infer(c["model"], [texts_input("text", c["texts"])], request_id="c1")
    out["classify"] = {"labels": [b.decode() for b in r.as_numpy("label")], "probabilities": r.as_numpy("probabilities").tolist(),
                       "id": r.get_response().id, "version": r.get_response().model_version}
    only = client.infer(c["model"], [texts_input("text", c["texts"])], outputs=[grpcclient.InferRequestedOutput("label")])
    out["classify_label_only"] = [o.name for o in only.get_response().outputs]

    g = cases["infer"]
    r = client.infer(g["model"], [texts_input("prompt", [g["prompt"]])], parameters=g["parameters"])
    out["infer"] = {"text": r.as_numpy("text")[0].decode(), "finish_reason": param(r.get_response(), "finish_reason")}

    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    for s in cases["stream"]:
        client.async_stream_infer(s["model"], [texts_input("prompt", [s["prompt"]])], request_id=s["id"],
                                  parameters=s["parameters"])
    client.async_stream_infer("no-such-model", [texts_input("prompt", ["x"])], request_id="bad")
    client.stop_stream()  # waits until the server ends the stream: every response has arrived
    streams: dict = {s["id"]: {"text": "", "responses": 0, "final": [], "finish_reason": None} for s in cases["stream"]}
    stream_errors = []
    while not responses.empty():
        result, err = responses.get()
        if err is not None:
            stream_errors.append(str(err))
            continue
        resp = result.get_response()
        s = streams[resp.id]
        s["text"] += result.as_numpy("text")[0].decode()
        s["responses"] += 1
        s["final"].append(param(resp, "triton_final_response"))
        s["finish_reason"] = param(resp, "finish_reason") or s["finish_reason"]
    out["stream"], out["stream_errors"] = streams, stream_errors

    lm, clf = g["model"], c["model"]
    bad_dtype = grpcclient.InferInput("text", [1], "INT32")
    bad_dtype.set_data_from_numpy(np.array([1], dtype=np.int32))
    out["errors"] = {
        "unknown_model": error(lambda: client.infer("no-such-model", [texts_input("text", ["x"])])),
        "bad_datatype": error(lambda: client.infer(clf, [bad_dtype])),
        "missing_input": error(lambda: client.infer(clf, [])),
        "wrong_input": error(lambda: client.infer(clf, [texts_input("prompt", ["x"])])),
        "bad_temperature": error(lambda: client.infer(lm, [texts_input("prompt", ["x"])], parameters={"temperature": -1.0})),
        "unknown_parameter": error(lambda: client.infer(lm, [texts_input("prompt", ["x"])], parameters={"tempature": 1.0})),
        "unsupported_rpc": error(lambda: client.get_inference_statistics(lm)),
    }
    client.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), json.loads(sys.argv[2]))))
