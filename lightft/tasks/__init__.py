"""Task registry: each task name -> its DataModule and LightningModule.

The CLI and run folders only go through `get_task`, so adding a task is one `TaskSpec` line here.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightft.data.base import TaskDataModule
from lightft.data.classify import ClassificationDataModule
from lightft.data.ner import NerDataModule
from lightft.errors import LightftError
from lightft.tasks.classify import ClassificationModule
from lightft.tasks.ner import NerModule
from lightft.train.module import TaskModule


@dataclass(frozen=True)
class TaskSpec:
    name: str
    datamodule: type[TaskDataModule]
    module: type[TaskModule]
    summary: str


TASKS = {
    spec.name: spec
    for spec in [
        TaskSpec("classify", ClassificationDataModule, ClassificationModule,
                 "sequence classification (CSV/TSV/JSONL with text[, pair] and label)"),
        TaskSpec("ner", NerDataModule, NerModule,
                 "token classification / NER (CoNLL or JSONL tokens+tags, BIO / IOB2)"),
    ]
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise LightftError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
