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
