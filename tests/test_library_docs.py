"""docs/library.md: every python snippet runs as written."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "docs", "library.md"), encoding="utf-8") as f:
    SNIPPETS = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_docs_have_the_three_uses():
    assert len(SNIPPETS) >= 5


@pytest.mark.parametrize("i", range(len(SNIPPETS)))
def test_snippet_runs(i, capsys):
    code = SNIPPETS[i]
    if "import optuna" in code:
        pytest.importorskip("optuna")
    exec(compile(code, f"docs/library.md[{i}]", "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.strip()  # each snippet prints what it computes


def _text():
    with open(os.path.join(ROOT, "docs", "library.md"), encoding="utf-8") as f:
        return " ".join(f.read().split())


def test_the_docs_say_what_regrowth_does():
    """A weight that dies and is regrown in the same update keeps its value (docs/dst.md's
    revivals): the docs no longer say that every regrown weight starts at zero."""
    text = _text()
    assert "regrown weights start at zero" not in text
    assert "A weight that dies and is regrown in the same update keeps its value" in text


def test_regrowth_as_the_docs_say_it():
    import torch
    from torch import nn

    from lshx.sparse.any_model import sparsify

    torch.manual_seed(0)
    m = nn.Linear(40, 40, bias=False)
    masking = sparsify(m, density=0.5, death="magnitude", death_rate=0.9, mask_init="random", total_steps=100)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.randn(8, 40)).pow(2).sum().backward()
    masking.step(opt)
    old_mask, old_w = masking.masks["weight"].clone(), m.weight.detach().clone()
    masking.update_topology(opt)
    new = masking.masks["weight"]
    w = m.weight.detach()
    grown = new & ~old_mask
    assert grown.any() and (w[grown] == 0).all()  # newly grown: zero
    kept = new & old_mask
    assert torch.equal(w[kept], old_w[kept])  # survived or revived: its old value


def test_the_docs_say_the_hyperparameters_must_match_the_reference():
    assert "must be the dense reference's" in _text()
