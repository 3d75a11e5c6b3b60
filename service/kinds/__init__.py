"""Model kinds, keyed by meta.json's `kind`: each is one module, and the servers' dispatch goes through this registry.

A Kind (base.py) says how an artifact of its kind becomes a runner, which engine runs it, which
rnnserve.v1.Inference RPCs it serves (any other gets FAILED_PRECONDITION) and how it answers the
Open Inference Protocol. The servicers, the repository and the model host look the kind up here and
never switch on the kind's name.

To add a kind (service/kinds/translator.py is a worked example: two graphs, its own tokenizer files, its
own engine):
1. service/artifact/kinds.py: the rules its meta.json must follow (training writes it, so this part
   of the contract lives with the artifact), and its name in KINDS.
2. service/kinds/<kind>.py: `class SomeKind(Kind[SomeEngine])`: `load` reads its graphs with
   models.runners.load_session into a runner (and `read_tokenizer` reads its tokenizer files when they are
   not one tokenizer.json), `engine` makes its engine (an Engine from service/engine/), `rpcs` maps its
   RPC names to handlers, and the v2_* methods answer ModelInfer.
3. Register it below: `register(SomeKind())`.
4. Its RPC (e.g. Translate) in protos/rnnserve/v1/rnnserve.proto, and in api/native.py the method that
   hands it to the kind, two lines like Generate's. The v2 servicer and the repository need no change.
"""

from service.kinds.base import Handler, Kind, Served, get, handler, register
from service.kinds.captioner import Captioner
from service.kinds.char_lm import CharLM
from service.kinds.classifier import Classifier
from service.kinds.translator import Translator

register(CharLM())
register(Classifier())
register(Translator())
register(Captioner())

__all__ = ["Handler", "Kind", "Served", "get", "handler", "register"]
