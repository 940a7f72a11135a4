"""Question ids that group several records into one question (BioASQ in SQuAD form: `<question>_<nnn>`).

Shared by the QA data module (whole questions are held out together) and the QA task (factoid
metrics are computed per question), which never import each other.
"""

from __future__ import annotations

import re
from typing import Optional

_GROUPED_ID = re.compile(r"^(.+)_(\d+)$")  # BioASQ in SQuAD form: <question id>_<snippet number>


def question_groups(ids: list[str], mode: str) -> Optional[dict[str, str]]:
    """id -> question id for BioASQ-style `<question>_<nnn>` ids, or None when ids are not grouped."""
    if mode == "no":
        return None
    matches = {i: _GROUPED_ID.match(i) for i in ids}
    if mode == "auto" and (not all(matches.values()) or len({m.group(1) for m in matches.values()}) == len(ids)):
        return None
    return {i: (m.group(1) if m else i) for i, m in matches.items()}
