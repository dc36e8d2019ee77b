"""``multipart/form-data`` request bodies (image edits and audio uploads), read and written again.

Read with the standard library's MIME parser (RFC 7578 forms are MIME multiparts); written again
with httpx's encoder only when a field changed (a fallback or degraded model), with the same
boundary, so an unchanged form goes upstream byte for byte as the client sent it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser

import httpx

from tokenward.errors import ValidationError

__all__ = ["Form", "FormFile", "parse_form"]


@dataclass(frozen=True, slots=True)
class FormFile:
    """One uploaded file of a form.

    Attributes:
        name: the form field (``file``, ``image``, ``image[]``, ``mask``).
        filename: the file name the client gave, or None.
        content_type: its declared type, or None.
        data: its bytes.
    """

    name: str
    filename: str | None
    content_type: str | None
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Form:
    """A parsed form: its text fields (a repeated field keeps every value), its files, and the
    bytes and content type it came as."""

    fields: tuple[tuple[str, str], ...]
    files: tuple[FormFile, ...]
    raw: bytes = field(repr=False)
    content_type: str = ""

    def value(self, name: str) -> str | None:
        """The last value of a text field, or None."""
        values = [v for k, v in self.fields if k == name]
        return values[-1] if values else None

    def encoded(self, changes: Mapping[str, str]) -> tuple[bytes, str]:
        """The form with ``changes`` applied to its text fields: the original bytes when nothing
        changes, else the form written again with the same boundary."""
        if all(self.value(k) == v for k, v in changes.items()):
            return self.raw, self.content_type
        fields = [(k, changes.get(k, v)) for k, v in self.fields]
        fields += [(k, v) for k, v in changes.items() if self.value(k) is None]
        files = [(f.name, (f.filename or "upload", f.data, f.content_type)) for f in self.files]
        request = httpx.Request(
            "POST",
            "http://form.invalid",
            data=dict(_grouped(fields)),
            files=files,
            headers={"content-type": self.content_type},
        )
        return request.read(), self.content_type


def _grouped(fields: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for key, value in fields:
        if key in out:
            previous = out[key]
            out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[key] = value
    return out


def parse_form(raw: bytes, content_type: str | None) -> Form:
    """Read a ``multipart/form-data`` body.

    Raises:
        ValidationError: the body is not a multipart form (``field`` is ``body``).
    """
    if not content_type or not content_type.lower().startswith("multipart/form-data"):
        raise ValidationError("the request body must be multipart/form-data", field="body")
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + raw
    )
    if not message.is_multipart() or message.defects:
        raise ValidationError("the multipart form cannot be read (boundary or parts)", field="body")
    fields: list[tuple[str, str]] = []
    files: list[FormFile] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            raise ValidationError("a form part has no name", field="body")
        data = _payload(part)
        filename = part.get_filename()
        if filename is not None or (part.get_content_type() != "text/plain" and "content-type" in part):
            files.append(FormFile(name, filename, part.get_content_type(), data))
        else:
            try:
                fields.append((name, data.decode("utf-8")))
            except UnicodeDecodeError:
                raise ValidationError(f"form field {name!r} is not UTF-8 text", field=name) from None
    return Form(tuple(fields), tuple(files), raw, content_type)


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""
