"""A template's sha256 is part of every cache key and manifest that used it.

It is the hash of the file's bytes, comments included: editing a released
template (even a comment) silently turns every cached answer of it into a miss
and changes its outputs' recorded template. Change the wording in a new version
(name.vN+1.yaml) instead; this test fails on an edit in place.
"""

import hashlib

from tests.paths import REPO

RELEASED = {
    "eval_instruct.v1.yaml": "d06c28a1cf1ca6b871414629207d63019f26da6e50974ac98ca53109c5a48e5f",
    "eval_gsm8k.v1.yaml": "3ef25e8fbb48203ebf33d4cc7695d74c2a72aff1ae6cf289a3fde826f8874ee3",
    "eval_gsm8k_completion.v1.yaml": "d2e16974b4f3b2c238ae97d650dca72816cf3211c3593993790f122fdec53722",
    "if_fusion.v1.yaml": "e23276d3db009900947630a3bc8fe2f0e77c5f7e7cf2c4d0a867c03cc7375156",
    "if_fusion.v2.yaml": "c122c1d7eb09121114012e88c04bda62a7f65fa9cc69d88cfff5a36c31ea42e1",
    "if_response.v1.yaml": "08d6dafea97a49770fa1b02c382fae753920cf9134ca54ce93a7147b379d5dae",
    "if_response.v2.yaml": "f9f43d455e6cdb5b3b4a0ee0a72db162475d554196f9b2f33595da59be300ac1",
    "sft_alpaca.v1.yaml": "55991e1a4933a00a51caf813ba696fdd734bb4af20050877a96fb1465e35258d",
    "tacie_decompose.v1.yaml": "3d563d5a4c1e083d36cf19dbb7df0a343998c8538a9cb145d225dde6f2694c35",
    "tacie_decompose.v2.yaml": "c2ad0fa9a2a0be30f323999d7e34029c63ce8fd94fc830d1cc68f8e2a4636eb6",
    "tacie_depth.v2.yaml": "2166282118575bde09ef5ef4a4ad7d2bbd7742b1000ba14f0acc3363d9f89016",
    "tacie_depth_background.v1.yaml": "97a3d49e45526283641a3e1c2ab6d24e47bab73eb938dd9748ddfef5c520306d",
    "tacie_depth_constraint.v1.yaml": "08156193149afcbb75e2c9690f9d75141598250db0ec0f0052efa6d52fc2d673",
    "tacie_diversify.v1.yaml": "72ef102b3342017f14d4bc5ed553a55a590383696648466f1daba8822d44e2b3",
    "tacie_diversify.v2.yaml": "6642c022583a63de465e8c19ea916eb7255e240168c35cfb62fa4e44bf5ca1ee",
    "tacie_fusion.v1.yaml": "fabafe9652e8eb486b09295dcdffbf494cf4e10bb16c7f136192d4c7ce99b9eb",
    "tacie_fusion.v2.yaml": "7a2ec9f2d21df52bd66378bfc4d1d41973495f7568272b03f049047bc9b0fcc2",
    "tacie_response.v1.yaml": "b3f598b79f13c0a7fa78b67811b1ea89b10fdbaf83cd022cc1505f731fd33f11",
}


def test_released_templates_are_not_edited_in_place():
    prompts = REPO / "ray_pipeline" / "prompts"
    found = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in prompts.glob("*.yaml")}
    assert {name: found.get(name) for name in RELEASED} == RELEASED
    assert set(found) >= set(RELEASED)
