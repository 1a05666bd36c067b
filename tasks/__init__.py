"""What is evaluated: the subjects and their groups, their data, and the prompt protocols.

Knows nothing of models. Subject facts live in `subjects.yaml` (a user's own in a tasks file of
the same schema), protocols in `protocols.yaml`.
"""

from tasks.data import NORMALIZATIONS, Question, SubjectData, load_benchmark, load_hub, load_local
from tasks.errors import TaskError
from tasks.protocols import MAX_SHOTS, Protocol, check_shots, fewshot_examples, get_protocol, protocols
from tasks.registry import (
    GENERAL,
    GROUP,
    LETTERS,
    Group,
    Registry,
    Subject,
    all_subjects,
    builtin_registry,
    devops_subjects,
    load_registry,
    select_subjects,
)

__all__ = [
    "GENERAL",
    "GROUP",
    "LETTERS",
    "MAX_SHOTS",
    "NORMALIZATIONS",
    "Group",
    "Protocol",
    "Question",
    "Registry",
    "Subject",
    "SubjectData",
    "TaskError",
    "all_subjects",
    "builtin_registry",
    "check_shots",
    "devops_subjects",
    "fewshot_examples",
    "get_protocol",
    "load_benchmark",
    "load_hub",
    "load_local",
    "load_registry",
    "protocols",
    "select_subjects",
]
