"""attention_rows: full rows of chosen heads at chosen queries from the fused path, against eager patterns."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any triton import: the triton backend runs on CPU

import pytest
import torch

import interp
from interp.edits import MixUniform, SetPattern
from interp.errors import InputError
from interp.types import HeadId

from test_attnstats import hf_eager_patterns

TEXTS = ["the quick brown fox jumps over the lazy dog", "hello", "a b c d e"]


@pytest.mark.parametrize("backend", ["cpu", "reference", "triton"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_rows_equal_eager_patterns(tiny_llama, backend, side):
    heads = [HeadId(1, 4), HeadId(0, 0), HeadId(1, 1)]
    rows = interp.attention_rows(tiny_llama, TEXTS, heads=heads, queries=[0, 1, -1], padding_side=side, backend=backend)
    st = interp.attention_stats(tiny_llama, TEXTS, padding_side=side, backend="cpu")
    pats, _ = hf_eager_patterns(tiny_llama, st)  # [batch layer head q k]
    mask = st.attention_mask.bool()
    assert rows.shape == (3, 3, 3, mask.shape[1])
    for b in range(3):
        real = mask[b].nonzero()[:, 0]
        for j, q in enumerate([real[0], real[min(1, len(real) - 1)], real[-1]]):
            for i, h in enumerate(heads):
                torch.testing.assert_close(rows[b, i, j], pats[b, h.layer, h.head, q], atol=1e-5, rtol=0)
    assert torch.all(rows[~mask[:, None, None, :].expand_as(rows)] == 0)


def test_rows_are_the_edited_pattern(tiny_llama):
    edits = [MixUniform(HeadId(1, 2), 1.0), SetPattern(HeadId(1, 3), (3,), [0.0, 0.5, 0.5, 0.0])]
    rows = interp.attention_rows(tiny_llama, TEXTS[2], heads=["L1H2", "L1H3"], queries=[3], edits=edits)
    torch.testing.assert_close(rows[0, 0, 0, :4], torch.full((4,), 0.25))
    torch.testing.assert_close(rows[0, 1, 0, :4], torch.tensor([0.0, 0.5, 0.5, 0.0]))
    assert torch.all(rows[0, :, 0, 4:] == 0)


def test_rows_bad_input(tiny_llama):
    with pytest.raises(InputError, match="outside a row"):
        interp.attention_rows(tiny_llama, TEXTS, heads=[HeadId(0, 0)], queries=[500])
    with pytest.raises(InputError, match="outside the model"):
        interp.attention_rows(tiny_llama, TEXTS, heads=[HeadId(9, 0)], queries=[0])
    with pytest.raises(InputError, match="fused path"):
        interp.attention_rows(tiny_llama, TEXTS, heads=[HeadId(0, 0)], queries=[0], backend="eager")
