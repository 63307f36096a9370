"""A toy task source for tests/test_tasks.py: examples written in the task dict itself. Written as
a user would add a task source: this one module, plus one line that registers it."""

from __future__ import annotations

from typing import Any

import numpy as np

from autopeft.tasks import Split, TaskData, TaskKind, TaskSpec


def load_inline(name: str, args: dict[str, Any]) -> TaskData:
    """`args["examples"]`: {"train": [[text, label], ...], "dev": [...]}; labels are class names."""
    examples = args["examples"]
    labels = tuple(sorted({label for split in examples.values() for _, label in split}))

    def split(rows: list[list[str]]) -> Split:
        return Split([text for text, _ in rows], None, np.array([labels.index(y) for _, y in rows], dtype=np.int64))

    spec = TaskSpec(name, "classification", labels, args.get("metric", "accuracy"), text_columns=("text",),
                    label_column="label")
    return TaskData(spec, split(examples["train"]), split(examples["dev"]), source="inline")


INLINE = TaskKind(marker="examples", load=load_inline, default_name=lambda args: "inline", carve=False)
