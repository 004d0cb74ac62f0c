"""FieldError: a cross-field validation failure that names the field it is about.

pydantic places an error raised in a model validator at the model (``registries[1]``), not at
the field the check is about. Raising FieldError instead lets ``describe_validation_error`` print the one
documented format, ``registries[1].url: ...``, for field and cross-field checks alike.
"""

from __future__ import annotations


class FieldError(ValueError):
    def __init__(self, field: str, message: str):
        # Read on its own (a model validated outside a list), the text still names the field.
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message
