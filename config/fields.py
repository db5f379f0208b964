"""Field types the sections share: comma-separated lists from the environment."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr
from pydantic_settings import NoDecode


def split_commas(value: Any) -> Any:
    """``"a, b"`` (an environment variable) becomes ``["a", "b"]``; a TOML array stays."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]
SecretList = Annotated[list[SecretStr], NoDecode, BeforeValidator(split_commas)]
