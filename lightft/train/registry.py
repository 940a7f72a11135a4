"""Task registry: each task name -> its DataModule and LightningModule.

Training, evaluation and prediction go through `get_task`, so adding a task is one `TaskSpec` line here
(and its name in lightft/cli/options.py TASK_NAMES, which a test keeps equal to this table).
"""

from __future__ import annotations

from dataclasses import dataclass

from lightft.data.base import TaskDataModule
from lightft.data.classify import ClassificationDataModule
from lightft.data.mlm import MLMDataModule
from lightft.data.ner import NerDataModule
from lightft.data.qa import QADataModule
from lightft.data.instruct import InstructDataModule
from lightft.data.lm import LMDataModule
from lightft.errors import LightftError
from lightft.tasks.causal_lm import CausalLMModule, InstructModule
from lightft.tasks.classify import ClassificationModule
from lightft.tasks.mlm import MLMModule
from lightft.tasks.ner import NerModule
from lightft.tasks.qa import QAModule
from lightft.tasks.module import TaskModule


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
        TaskSpec("qa", QADataModule, QAModule, "extractive question answering (SQuAD v1.1 JSON; BioASQ in SQuAD form)"),
        TaskSpec("mlm", MLMDataModule, MLMModule, "masked-LM continued pretraining of an encoder on raw text"),
        TaskSpec("lm", LMDataModule, CausalLMModule,
                 "continued pretraining on raw text (.txt files / folders, JSONL text), packed rows"),
        TaskSpec("instruct", InstructDataModule, InstructModule,
                 "instruction tuning (Alpaca JSON/JSONL, chat JSONL messages), loss on responses"),
    ]
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise LightftError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
