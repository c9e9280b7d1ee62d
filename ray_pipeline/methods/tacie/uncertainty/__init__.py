"""TaCIE's uncertainty (eq. 2-3): a scorer LM's log-probabilities of a response given its instruction.

* ``score``: q = P(r | c), the perturbed instructions c_j and u (eq. 2-3), on plain numbers;
* ``scorer``: the ``Scorer`` base (tokenization, prompt format, truncation) and ``resolve_model``;
* ``hf`` / ``vllm``: the two backends; ``registry``: ``build_scorer``, the backend a config names;
* ``stage``: the Ray Data stage that scores rows (q, q_j, u, instruction tokens).

This face imports nothing, so that no submodule's import runs back into it.
"""
