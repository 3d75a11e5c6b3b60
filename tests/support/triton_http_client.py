"""The official tritonclient.http, unmodified, against a running rnnserve: `python triton_http_client.py URL CASES_JSON`.

Runs in its own process, as the gRPC client does (triton_client.py): tritonclient's HTTP client brings gevent.
Prints one JSON object of results; inputs go as binary data (the client's default) and as JSON.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def texts_input(name: str, texts: list[str], binary: bool) -> httpclient.InferInput:
    t = httpclient.InferInput(name, [len(texts)], "BYTES")
    t.set_data_from_numpy(np.array([s.encode() for s in texts], dtype=np.object_), binary_data=binary)
    return t


def error(call) -> dict:
    try:
        call()
    except InferenceServerException as e:
        return {"status": e.status(), "message": e.message()}
    return {"status": "no error"}


def main(url: str, cases: dict) -> dict:
    client = httpclient.InferenceServerClient(url=url)
    out: dict = {
        "live": client.is_server_live(), "ready": client.is_server_ready(),
        "server": client.get_server_metadata(),
        "model_ready": {m: client.is_model_ready(m) for m in [*cases["models"], "no-such-model"]},
        "metadata": {m: client.get_model_metadata(m) for m in cases["models"]},
        "config": {m: client.get_model_config(m) for m in cases["models"]},
    }
    c = cases["classify"]
    for binary in (True, False):
        outputs = [httpclient.InferRequestedOutput("label", binary_data=binary),
                   httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
        r = client.infer(c["model"], [texts_input("text", c["texts"], binary)], request_id="c1", outputs=outputs)
        out[f"classify_binary_{binary}"] = {
            "labels": [x.decode() if isinstance(x, bytes) else x for x in r.as_numpy("label")],
            "probabilities": r.as_numpy("probabilities").tolist(), "id": r.get_response()["id"]}
    r = client.infer(c["model"], [texts_input("text", c["texts"], True)])  # no outputs named: all, binary
    out["classify_default"] = r.as_numpy("probabilities").tolist()

    g = cases["infer"]
    for binary in (True, False):
        r = client.infer(g["model"], [texts_input("prompt", [g["prompt"]], binary)], parameters=g["parameters"])
        text = r.as_numpy("text")[0]
        out[f"infer_binary_{binary}"] = {"text": text.decode() if isinstance(text, bytes) else text,
                                         "parameters": r.get_response().get("parameters")}

    lm, clf = g["model"], c["model"]
    bad_dtype = httpclient.InferInput("text", [1], "INT32")
    bad_dtype.set_data_from_numpy(np.array([1], dtype=np.int32))
    out["errors"] = {
        "unknown_model": error(lambda: client.infer("no-such-model", [texts_input("text", ["x"], True)])),
        "bad_datatype": error(lambda: client.infer(clf, [bad_dtype])),
        "wrong_input": error(lambda: client.infer(clf, [texts_input("prompt", ["x"], False)])),
        "bad_temperature": error(lambda: client.infer(lm, [texts_input("prompt", ["x"], True)],
                                                      parameters={"temperature": -1.0})),
        "unknown_parameter": error(lambda: client.infer(lm, [texts_input("prompt", ["x"], True)],
                                                        parameters={"tempature": 1.0})),
        "unsupported_route": error(lambda: client.get_inference_statistics(lm)),
    }
    client.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
