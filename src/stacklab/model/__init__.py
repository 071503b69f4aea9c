"""The lab file: schema (pydantic), loading with line numbers, cross-reference checks. No I/O beyond reading it."""

from stacklab.model.errors import Issue, LabError
from stacklab.model.lab import Lab
from stacklab.model.load import load_lab, load_lab_text

__all__ = ["Issue", "Lab", "LabError", "load_lab", "load_lab_text"]
