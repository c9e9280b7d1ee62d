"""Prompt uncertainty of an instruction (Kung et al. 2023, "Active Instruction Tuning"), as TaCIE uses it.

For an instruction c with response r, a scorer language model gives (TaCIE,
tacie.txt section 2.3, equation numbers as printed)

    q   = P(r | c)                                              (eq. 3 for the unperturbed c)
    q_j = P(r | c_j),  j = 1..N_U                               (eq. 3: q_ij)
    u   = (1 / N_U) * sum_j |q - q_j|                           (eq. 2: Score(c, r))

where each c_j is a copy of c with every word dropped independently with
probability ``drop_prob``. The paper says only "the random omission of a
certain percentage of words"; N_U = 10 and 0.2 are the authors' code
(cal_amb.py), as is q = exp(-mean token loss) of the response. An instruction whose response
likelihood moves a lot when a few words go missing is one the model has not
learnt to follow robustly; TaCIE prefers to evolve such instructions.

P(r | c) is the geometric mean of the response's token probabilities,
exp(mean_t log p(r_t | c, r_<t)): it lies in (0, 1], does not depend on the
response's length, and so compares responses of different lengths (the raw
product of token probabilities would call a long response uncertain just for
being long).
"""

from __future__ import annotations

import math
import random
import re
from typing import Sequence

# A word and the whitespace after it: dropping a word keeps the layout (line
# breaks, indentation) of what remains, so code keeps its tokens and lines.
_WORD = re.compile(r"\S+\s*")


def perturb(instruction: str, n: int, drop_prob: float, seed: int) -> list[str]:
    """N_U = ``n`` copies c_j of ``instruction`` for eq. 3, each word dropped with ``drop_prob``.

    Words are whitespace-separated; a copy keeps at least one word (one picked
    at random when every word was dropped). The same seed gives the same copies.
    An instruction without words is returned unchanged ``n`` times.
    """
    if n < 0 or not 0.0 <= drop_prob < 1.0:
        raise ValueError(f"perturb: need n >= 0 and 0 <= drop_prob < 1 (got n={n}, drop_prob={drop_prob})")
    words = _WORD.findall(instruction)
    if not words:
        return [instruction] * n
    head = instruction[: len(instruction) - len(instruction.lstrip())]
    tail = instruction[len(instruction.rstrip()):]
    rng = random.Random(seed)
    copies = []
    for _ in range(n):
        kept = [word for word in words if rng.random() >= drop_prob]
        if not kept:
            kept = [rng.choice(words)]
        copies.append(head + "".join(kept).rstrip() + tail)
    return copies


def sequence_probability(token_logprobs: Sequence[float], kind: str = "token_mean") -> float:
    """q of eq. 3 from the response's token log-probabilities.

    ``token_mean`` (default, the authors' code: exp(-loss)): exp of the mean token
    log-probability, the geometric mean of the token probabilities. ``product``: the
    literal P(r | c), the product of the token probabilities, which underflows
    towards 0 for long responses (every u of long responses is then about 0).
    An empty response (nothing scored) has no probability: NaN.
    """
    if len(token_logprobs) == 0:
        return math.nan
    total = math.fsum(token_logprobs)
    if kind == "token_mean":
        return math.exp(total / len(token_logprobs))
    if kind == "product":
        return math.exp(total)
    raise ValueError(f"sequence_probability: kind must be 'token_mean' or 'product', got {kind!r}")


def uncertainty(q: float, q_perturbed: Sequence[float]) -> float:
    """u of eq. 2: the mean absolute change of q over the perturbed instructions."""
    if len(q_perturbed) == 0:
        raise ValueError("uncertainty: no perturbed scores (N_U must be at least 1)")
    return math.fsum(abs(q - q_j) for q_j in q_perturbed) / len(q_perturbed)
