"""The README's code examples run as written."""

import re
from pathlib import Path

README = (Path(__file__).parents[1] / "README.md").read_text()


def python_block_after(heading):
    section = README.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_objective_example_runs(monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])
    namespace = {}
    exec(python_block_after("## The training objective"), namespace)
    losses = namespace["losses"]
    assert set(losses) == {"loss_mask", "loss_dice", "loss_iou", "loss_class", "core_loss"}
    assert namespace["scheduler"].state_dict() == {"step_count": 1}
