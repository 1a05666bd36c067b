"""What is evaluated: the DevOps subjects, their data, and the prompt protocols.

Knows nothing of models. Subject facts live in `subjects.yaml`, protocols in `protocols.yaml`.
"""

from tasks.data import NORMALIZATIONS, Question, SubjectData, load_benchmark, load_hub, load_local
from tasks.errors import TaskError
from tasks.protocols import MAX_SHOTS, Protocol, check_shots, fewshot_examples, get_protocol, protocols
from tasks.registry import GROUP, LETTERS, Subject, all_subjects, select_subjects

__all__ = [
    "GROUP",
    "LETTERS",
    "MAX_SHOTS",
    "NORMALIZATIONS",
    "Protocol",
    "Question",
    "Subject",
    "SubjectData",
    "TaskError",
    "all_subjects",
    "check_shots",
    "fewshot_examples",
    "get_protocol",
    "load_benchmark",
    "load_hub",
    "load_local",
    "protocols",
    "select_subjects",
]
