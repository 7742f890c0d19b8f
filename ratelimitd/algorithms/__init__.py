"""Rate limiting algorithms: each is a strategy with its parameters, its pure math (used by the
memory store) and a Lua script of the same math (used by the Redis store). Adding one means a
module here, a file in lua/, and an entry in ALGORITHMS. How one request's hits together get
their answer, whatever the algorithms, is algorithms.request."""

from ratelimitd.algorithms.base import Algorithm, Evaluation, Hit, Outcome
from ratelimitd.algorithms.fixed_window import FIXED_WINDOW
from ratelimitd.algorithms.gcra import GCRA
from ratelimitd.algorithms.request import evaluate_hits, keeps_charge, probes, rejects, settle
from ratelimitd.algorithms.sliding_window import SLIDING_WINDOW
from ratelimitd.algorithms.token_bucket import TOKEN_BUCKET
from ratelimitd.model.rules import DEFAULT_ALGORITHM

ALGORITHMS: dict[str, Algorithm] = {
    a.name: a for a in (TOKEN_BUCKET, FIXED_WINDOW, SLIDING_WINDOW, GCRA)
}

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "Algorithm",
    "Evaluation",
    "Hit",
    "Outcome",
    "evaluate_hits",
    "keeps_charge",
    "probes",
    "rejects",
    "settle",
]
